package events

// Permissions are the subjects a NATS user may publish to and subscribe
// to: the allow lists of the user's permissions in a NATS server's
// authorization block. Everything else is denied.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// replies is where a client receives the answers to its requests (the
// JetStream API's, PubAcks) and the messages of its pull consumers:
// nats.go's default inbox prefix.
const replies = "_INBOX.>"

// PublisherPermissions are what the control plane needs on the channel:
// create its stream or update it to the configured settings, and publish
// events. It can neither delete nor purge the stream, nor read it.
func (c Channel) PublisherPermissions() Permissions {
	return Permissions{
		Publish: []string{
			c.All(),
			"$JS.API.STREAM.CREATE." + c.Stream,
			"$JS.API.STREAM.UPDATE." + c.Stream,
		},
		Subscribe: []string{replies},
	}
}

// FollowerPermissions are what a subscriber reading through ordered
// consumers needs, as the tenant plane does: create consumers on the
// stream and pull their messages. Ordered consumers have random names and
// take no acks. The follower can publish no event and can change, purge
// or delete neither the stream nor a consumer.
//
// Subject permissions cannot tell the names of its consumers from those of
// other subscribers on the same stream, so a follower could also pull from
// or reconfigure those; a subscriber that must be shielded from it uses a
// NATS account of its own (with a mirror of the stream) instead.
func (c Channel) FollowerPermissions() Permissions {
	return Permissions{
		Publish: []string{
			// The filtered form ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>)
			// and the plain one both fall under this.
			"$JS.API.CONSUMER.CREATE." + c.Stream + ".>",
			"$JS.API.CONSUMER.MSG.NEXT." + c.Stream + ".*",
		},
		Subscribe: []string{replies},
	}
}

// SubscriberPermissions are what a subscriber with one durable consumer
// needs (see docs/events.md, "How to subscribe"): create or update that
// consumer, pull its messages and acknowledge them. Nothing else: no other
// consumer, no event, no change to the stream.
func (c Channel) SubscriberPermissions(durable string) Permissions {
	consumer := c.Stream + "." + durable
	return Permissions{
		Publish: []string{
			"$JS.API.CONSUMER.CREATE." + consumer,
			"$JS.API.CONSUMER.CREATE." + consumer + ".>",
			"$JS.API.CONSUMER.MSG.NEXT." + consumer,
			// Acks reply to $JS.ACK.<stream>.<consumer>.<delivery details>.
			"$JS.ACK." + consumer + ".>",
		},
		Subscribe: []string{replies},
	}
}
