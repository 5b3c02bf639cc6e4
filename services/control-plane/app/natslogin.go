package app

import (
	"errors"

	"github.com/nats-io/nats.go"
)

// natsLogin is the login on NATS, none when NATS_USER is empty.
func (c Config) natsLogin() []nats.Option {
	if c.NATSUser == "" {
		return nil
	}
	return []nats.Option{nats.UserInfo(c.NATSUser, c.NATSPassword.Reveal())}
}

func (c Config) checkNATSLogin() error {
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		return errors.New("set both NATS_USER and NATS_PASSWORD, or neither")
	}
	return nil
}
