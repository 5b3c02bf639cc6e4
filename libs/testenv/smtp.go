package testenv

import (
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mail is one message the SMTP server accepted.
type Mail struct {
	From string
	To   []string
	// Data is the raw message: headers, a blank line, the body.
	Data string
}

// Text is the body of the message as a mail client shows it, with a
// quoted-printable transfer encoding undone.
func (m Mail) Text(tb testing.TB) string {
	tb.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		tb.Fatalf("testenv: parse mail: %v\n%s", err, m.Data)
	}
	body := msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	text, err := io.ReadAll(body)
	if err != nil {
		tb.Fatalf("testenv: read mail body: %v", err)
	}
	return string(text)
}

// LinkIn returns the first link in text that starts with prefix, up to the
// next white space, failing the test when there is none.
func LinkIn(tb testing.TB, text, prefix string) *url.URL {
	tb.Helper()
	i := strings.Index(text, prefix)
	if i < 0 {
		tb.Fatalf("testenv: no link starting %s in:\n%s", prefix, text)
	}
	link := strings.Fields(text[i:])[0]
	u, err := url.Parse(link)
	if err != nil {
		tb.Fatalf("testenv: parse link %q: %v", link, err)
	}
	return u
}

// SMTPServer accepts every message for any sender and recipient and keeps it.
type SMTPServer struct {
	addr string

	mu       sync.Mutex
	messages []Mail
	// arrived is closed and replaced whenever a message is stored.
	arrived chan struct{}
}

// SMTP starts an SMTP server on 127.0.0.1 on a free port, stopped when the
// test ends. It offers AUTH PLAIN without TLS and accepts any credentials,
// so clients configured with a username work as well as those without.
func SMTP(tb testing.TB) *SMTPServer {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: SMTP listen: %v", err)
	}
	s := &SMTPServer{addr: l.Addr().String(), arrived: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{server: s}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return s
}

// Addr is host:port of the server.
func (s *SMTPServer) Addr() string { return s.addr }

// Messages returns the messages received so far, oldest first.
func (s *SMTPServer) Messages() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mail, len(s.messages))
	copy(out, s.messages)
	return out
}

// WaitForMail returns the first message, received before or during the
// wait, for which match is true; it fails the test after timeout.
func (s *SMTPServer) WaitForMail(tb testing.TB, timeout time.Duration, match func(Mail) bool) Mail {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		arrived := s.arrived
		for _, m := range s.messages {
			if match(m) {
				s.mu.Unlock()
				return m
			}
		}
		n := len(s.messages)
		s.mu.Unlock()
		select {
		case <-arrived:
		case <-deadline:
			tb.Fatalf("testenv: no matching mail within %s (%d received)", timeout, n)
			return Mail{}
		}
	}
}

func (s *SMTPServer) store(m Mail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

type smtpSession struct {
	server *SMTPServer
	from   string
	to     []string
}

func (x *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}

func (x *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	x.from = from
	return nil
}

func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.to = append(x.to, to)
	return nil
}

func (x *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.server.store(Mail{From: x.from, To: x.to, Data: string(b)})
	x.Reset()
	return nil
}

func (x *smtpSession) Reset() {
	x.from = ""
	x.to = nil
}

func (x *smtpSession) Logout() error { return nil }
