// Package mailer sends plain-text mail: over SMTP to a configured server,
// or, on a machine without one, into the log so a developer can follow the
// links it would have carried.
package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"

	"tenantbase/libs/logctx"
)

// SMTP sends each message in its own connection to one server. It upgrades
// to TLS with STARTTLS, and authenticates (AUTH PLAIN) when a username is
// set; net/smtp refuses to send the password over an unencrypted
// connection to anything but localhost.
type SMTP struct {
	addr       string
	host       string
	from       *mail.Address
	username   string
	password   string
	requireTLS bool
	timeout    time.Duration
}

// SMTPOptions configure NewSMTP.
type SMTPOptions struct {
	// Addr is the server's host:port.
	Addr string
	// From may carry a display name ("Tenantbase <no-reply@example.com>").
	From               string
	Username, Password string
	// RequireTLS refuses to send when the server offers no STARTTLS: mail
	// carries single-use links, and a server that stops offering STARTTLS
	// may be an attacker in between. Only development servers go without.
	RequireTLS bool
}

// NewSMTP returns a mailer for one server.
func NewSMTP(o SMTPOptions) (*SMTP, error) {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("mailer: SMTP address %q: %w", o.Addr, err)
	}
	sender, err := mail.ParseAddress(o.From)
	if err != nil {
		return nil, fmt.Errorf("mailer: sender %q: %w", o.From, err)
	}
	return &SMTP{addr: o.Addr, host: host, from: sender, username: o.Username, password: o.Password,
		requireTLS: o.RequireTLS, timeout: 30 * time.Second}, nil
}

// ErrNoTLS means the server offered no STARTTLS while TLS is required.
var ErrNoTLS = errors.New("mailer: the SMTP server offers no STARTTLS and TLS is required (SMTP_REQUIRE_TLS)")

// Send delivers one message to to. It gives up when ctx ends or after the
// mailer's timeout, whichever comes first.
func (m *SMTP) Send(ctx context.Context, to, subject, body string) error {
	msg, err := m.compose(to, subject, body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return fmt.Errorf("mailer: connect %s: %w", m.addr, err)
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// net/smtp knows no context: a cancelled ctx unblocks it through the deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c, err := smtp.NewClient(conn, m.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mailer: greeting from %s: %w", m.addr, err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: m.host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("mailer: STARTTLS: %w", err)
		}
	} else if m.requireTLS {
		return ErrNoTLS
	}
	if m.username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.username, m.password, m.host)); err != nil {
			return fmt.Errorf("mailer: AUTH: %w", err)
		}
	}
	if err := c.Mail(m.from.Address); err != nil {
		return fmt.Errorf("mailer: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("mailer: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mailer: message refused: %w", err)
	}
	return c.Quit()
}

// compose renders an RFC 5322 message; the body is quoted-printable so
// long lines and non-ASCII text survive any relay.
func (m *SMTP) compose(to, subject, body string) ([]byte, error) {
	rcpt, err := mail.ParseAddress(to)
	if err != nil || rcpt.Address != to {
		return nil, fmt.Errorf("mailer: recipient %q is not a plain address", to)
	}
	var buf bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	header("From", m.from.String())
	header("To", rcpt.String())
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	header("Date", time.Now().Format(time.RFC1123Z))
	header("Message-ID", "<"+messageID()+"@"+senderDomain(m.from.Address)+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	buf.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&buf)
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func messageID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func senderDomain(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return "localhost"
}

// Log writes each message to the request's log (Fallback outside a
// request) instead of sending it: the fallback when no SMTP server is
// configured outside production, so local sign-ups can still follow their
// verification links.
type Log struct {
	Fallback *slog.Logger
}

// Send logs the message at info level and never fails.
func (l Log) Send(ctx context.Context, to, subject, body string) error {
	logctx.From(ctx, l.Fallback).Info("mail not sent: no SMTP server configured (SMTP_ADDR); its content follows",
		"to", to, "subject", subject, "body", body)
	return nil
}
