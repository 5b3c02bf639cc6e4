package mailer_test

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/mailer"
)

func TestSMTPSend(t *testing.T) {
	t.Parallel()
	server := testenv.SMTP(t)
	longLine := "https://tenantbase.test/auth/verify?token=" + strings.Repeat("A", 120)
	body := "Grüße,\n\n" + longLine + "\n\nend with a dot\n.\n"

	cases := []struct {
		name     string
		username string
		to       string
	}{
		{name: "without auth", to: "plain@example.com"},
		{name: "with auth", username: "mailer", to: "auth@example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := mailer.NewSMTP(mailer.SMTPOptions{Addr: server.Addr(), From: "Tenantbase <no-reply@tenantbase.test>", Username: tc.username, Password: "secret"})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Send(context.Background(), tc.to, "Bestätigen Sie", body); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := server.WaitForMail(t, 5*time.Second, func(m testenv.Mail) bool { return m.To[0] == tc.to })
			if got.From != "no-reply@tenantbase.test" || len(got.To) != 1 {
				t.Fatalf("envelope from %q to %v", got.From, got.To)
			}
			msg, err := mail.ReadMessage(strings.NewReader(got.Data))
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, got.Data)
			}
			subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
			if err != nil || subject != "Bestätigen Sie" {
				t.Fatalf("subject %q (%v)", subject, err)
			}
			if msg.Header.Get("To") != "<"+tc.to+">" || !strings.Contains(msg.Header.Get("From"), "<no-reply@tenantbase.test>") ||
				msg.Header.Get("Message-Id") == "" || msg.Header.Get("Date") == "" {
				t.Fatalf("headers %v", msg.Header)
			}
			decoded, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(body, "\n", "\r\n"); string(decoded) != want {
				t.Fatalf("body %q, want %q", decoded, want)
			}
			for _, line := range strings.Split(got.Data, "\r\n") {
				if len(line) > 78 {
					t.Fatalf("line of %d characters in the raw message", len(line))
				}
			}
		})
	}
}

func TestSMTPSendFailures(t *testing.T) {
	t.Parallel()
	server := testenv.SMTP(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	// silent accepts connections and never greets, like a hung server.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	cases := []struct {
		name    string
		addr    string
		to      string
		timeout time.Duration
	}{
		{name: "nothing listens", addr: closed, to: "a@example.com"},
		{name: "header injection in recipient", addr: server.Addr(), to: "a@example.com\r\nBcc: b@example.com"},
		{name: "recipient with display name", addr: server.Addr(), to: "A <a@example.com>"},
		{name: "server never answers", addr: silent.Addr().String(), to: "a@example.com", timeout: 300 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := mailer.NewSMTP(mailer.SMTPOptions{Addr: tc.addr, From: "no-reply@tenantbase.test"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			if err := m.Send(ctx, tc.to, "subject", "body"); err == nil {
				t.Fatal("Send succeeded")
			}
			t.Logf("failed after %v", time.Since(start))
		})
	}
	if n := len(server.Messages()); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}

	for _, bad := range []struct{ addr, from string }{
		{"no-port", "a@example.com"},
		{"127.0.0.1:25", "not an address"},
	} {
		if _, err := mailer.NewSMTP(mailer.SMTPOptions{Addr: bad.addr, From: bad.from}); err == nil {
			t.Errorf("NewSMTP(%q, %q) accepted", bad.addr, bad.from)
		}
	}
}

// TestSMTPRequireTLS sends to a server that offers no STARTTLS: with TLS
// required nothing is sent, without it the message goes in clear.
func TestSMTPRequireTLS(t *testing.T) {
	t.Parallel()
	server := testenv.SMTP(t)
	strict, err := mailer.NewSMTP(mailer.SMTPOptions{Addr: server.Addr(), From: "no-reply@tenantbase.test", RequireTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.Send(context.Background(), "a@example.com", "Hello", "body"); !errors.Is(err, mailer.ErrNoTLS) {
		t.Fatalf("Send without STARTTLS, TLS required: %v, want ErrNoTLS", err)
	}
	if n := len(server.Messages()); n != 0 {
		t.Fatalf("%d messages delivered in clear although TLS is required", n)
	}
	lax, err := mailer.NewSMTP(mailer.SMTPOptions{Addr: server.Addr(), From: "no-reply@tenantbase.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := lax.Send(context.Background(), "a@example.com", "Hello", "body"); err != nil {
		t.Fatal(err)
	}
}
