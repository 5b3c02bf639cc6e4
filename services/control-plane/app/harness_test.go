package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/config"
	"tenantbase/libs/openapitest"
	"tenantbase/libs/problem"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
)

// The bootstrap admin every harness starts with (see harnessOptions.Config
// to change or remove it).
const (
	adminEmail    = "admin@tenantbase.test"
	adminPassword = "admin-password-1"
)

// harnessOptions adjust one test's control plane.
type harnessOptions struct {
	// Config changes the configuration after the test defaults are set.
	Config func(*app.Config)
	// DatabaseURL replaces the fresh test database, e.g. with a database on
	// a cluster the test stops and starts itself.
	DatabaseURL string
	// NoSMTP leaves SMTP_ADDR empty, so mail goes to the log instead.
	NoSMTP bool
}

// harness is one control plane started through app.Run on 127.0.0.1:0
// with its own database, embedded NATS and SMTP server. Every response
// fetched through do is checked against the OpenAPI document.
type harness struct {
	Config app.Config
	// PublicURL and InternalURL are the base URLs of the two listeners.
	PublicURL   string
	InternalURL string
	DatabaseURL string
	NATS        *testenv.NATSServer
	// SMTP is nil with harnessOptions.NoSMTP.
	SMTP *testenv.SMTPServer

	logs   *logBuffer
	spec   *openapitest.Validator
	client *http.Client

	poolOnce sync.Once
	pool     *pgxpool.Pool

	// stop shuts the control plane down gracefully and checks that Run
	// returned nil; it runs at the end of the test, or earlier when called.
	stop     func()
	stopOnce sync.Once
}

// startControlPlane runs the control plane until the test ends; the test
// fails if it does not stop cleanly.
func startControlPlane(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{
		logs:   &logBuffer{},
		spec:   openapitest.New(t, app.OpenAPI),
		client: &http.Client{Timeout: 30 * time.Second},
	}
	h.DatabaseURL = opts.DatabaseURL
	if h.DatabaseURL == "" {
		h.DatabaseURL = testenv.NewDatabase(t)
	}
	h.NATS = testenv.NATS(t)

	cfg, err := app.LoadConfig()
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	// What the tests assert on is pinned here, so that variables set in the
	// environment of a test run cannot change it.
	cfg.Env = "test"
	cfg.OwnerSignupPolicy = "open"
	cfg.AccessTokenTTL = 15 * time.Minute
	cfg.RefreshTokenTTL = 720 * time.Hour
	cfg.LoginMaxFailures = 5
	cfg.LoginLockout = 15 * time.Minute
	cfg.JWTIssuer = "tenantbase-control-plane"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.PublicURL = "http://tenantbase.test"
	cfg.DatabaseURL = config.Secret(h.DatabaseURL)
	cfg.NATSURL = h.NATS.URL()
	cfg.KeysDir = t.TempDir()
	cfg.JWTSigningKey = ""
	cfg.BcryptCost = 4
	cfg.LogLevel = "debug"
	cfg.BootstrapAdminEmail = adminEmail
	cfg.BootstrapAdminPassword = config.Secret(adminPassword)
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.SMTPAddr, cfg.SMTPUsername, cfg.SMTPPassword = "", "", ""
	if !opts.NoSMTP {
		h.SMTP = testenv.SMTP(t)
		cfg.SMTPAddr = h.SMTP.Addr()
	}
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	h.Config = cfg

	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, log, func(a app.Addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		h.PublicURL = "http://" + a.Public
		h.InternalURL = "http://" + a.Internal
	case err := <-done:
		cancel()
		t.Fatalf("control plane did not start: %v\nlogs:\n%s", err, h.logs)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatalf("control plane not ready after 2 minutes\nlogs:\n%s", h.logs)
	}
	h.stop = func() {
		h.stopOnce.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("control plane stopped with an error: %v", err)
				}
			case <-time.After(time.Minute):
				t.Errorf("control plane did not stop within a minute")
			}
			if h.pool != nil {
				h.pool.Close()
			}
			if t.Failed() {
				t.Logf("control plane logs:\n%s", h.logs)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

// apiResponse is a response read to the end.
type apiResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// decode unmarshals the body into v, failing the test when it cannot.
func (r *apiResponse) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %d response %q: %v", r.Status, r.Body, err)
	}
}

// problem decodes a problem+json body, failing the test for any other.
func (r *apiResponse) problem(t testing.TB) problem.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, problem.ContentType) {
		t.Fatalf("status %d with Content-Type %q, want %s; body %s", r.Status, ct, problem.ContentType, r.Body)
	}
	var p problem.Problem
	r.decode(t, &p)
	if p.Status != r.Status || p.Code == "" || p.Title == "" || p.Type == "" {
		t.Fatalf("malformed problem for status %d: %s", r.Status, r.Body)
	}
	return p
}

// expect fails the test unless the status is want and, for problems, the
// code is code (pass "" for a success).
func (r *apiResponse) expect(t testing.TB, want int, code string) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body %s", r.Status, want, r.Body)
	}
	if code != "" {
		if got := r.problem(t).Code; got != code {
			t.Fatalf("problem code %q, want %q; body %s", got, code, r.Body)
		}
	}
}

// request describes one call; see the with* options.
type request struct {
	header     http.Header
	rawBody    []byte
	hasRaw     bool
	chunked    bool
	undocument bool
}

type requestOption func(*request)

// withToken sends an Authorization: Bearer header.
func withToken(token string) requestOption {
	return func(r *request) { r.header.Set("Authorization", "Bearer "+token) }
}

// withHeader sets one request header.
func withHeader(key, value string) requestOption {
	return func(r *request) { r.header.Set(key, value) }
}

// withRawBody sends body as it is instead of JSON-encoding the body argument.
func withRawBody(body []byte) requestOption {
	return func(r *request) { r.rawBody, r.hasRaw = body, true }
}

// withUnknownLength sends the body chunked, without a Content-Length.
func withUnknownLength() requestOption {
	return func(r *request) { r.chunked = true }
}

// undocumented skips the OpenAPI check, for requests to routes the
// document rightly does not list (unknown paths, wrong methods).
func undocumented() requestOption {
	return func(r *request) { r.undocument = true }
}

// do sends method path (relative to the public URL) with body encoded as
// JSON (nil sends no body) and checks the answer against the OpenAPI document.
func (h *harness) do(t testing.TB, method, path string, body any, opts ...requestOption) *apiResponse {
	t.Helper()
	return h.send(t, h.PublicURL, method, path, body, opts...)
}

// send is do against any base URL; the OpenAPI check applies to the public
// listener only.
func (h *harness) send(t testing.TB, base, method, path string, body any, opts ...requestOption) *apiResponse {
	t.Helper()
	r := request{header: http.Header{}}
	for _, o := range opts {
		o(&r)
	}
	var payload []byte
	switch {
	case r.hasRaw:
		payload = r.rawBody
	case body != nil:
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		payload = b
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if payload == nil {
		req.Body = http.NoBody
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.chunked {
		req.ContentLength = -1
		req.Body = io.NopCloser(bytes.NewReader(payload))
		req.GetBody = nil
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if base == h.PublicURL && !r.undocument {
		h.spec.Check(t, req, res)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &apiResponse{Status: res.StatusCode, Header: res.Header, Body: b}
}

// db is a pool on the control plane's database for arranging test state
// the API offers no way to reach (an expired token, for instance).
func (h *harness) db(t testing.TB) *pgxpool.Pool {
	t.Helper()
	h.poolOnce.Do(func() {
		p, err := pgxpool.New(context.Background(), h.DatabaseURL)
		if err != nil {
			t.Fatalf("connect to the test database: %v", err)
		}
		h.pool = p
	})
	return h.pool
}

// userBody is a User as the API renders it.
type userBody struct {
	ID         int64     `json:"id"`
	Email      string    `json:"email"`
	IsVerified bool      `json:"is_verified"`
	IsOwner    bool      `json:"is_owner"`
	IsAdmin    bool      `json:"is_admin"`
	CreatedAt  time.Time `json:"created_at"`
}

// tokensBody answers a login or a refresh.
type tokensBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// register creates an unverified user and returns it.
func (h *harness) register(t testing.TB, email, password string, owner bool) userBody {
	t.Helper()
	res := h.do(t, http.MethodPost, "/auth/register", map[string]any{"email": email, "password": password, "is_owner": owner})
	res.expect(t, http.StatusCreated, "")
	var u userBody
	res.decode(t, &u)
	return u
}

// login returns a session for a verified user.
func (h *harness) login(t testing.TB, email, password string) tokensBody {
	t.Helper()
	res := h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": email, "password": password})
	res.expect(t, http.StatusOK, "")
	var tok tokensBody
	res.decode(t, &tok)
	return tok
}

// signUp registers email, follows the link mailed to it and logs in.
func (h *harness) signUp(t testing.TB, email, password string, owner bool) (userBody, tokensBody) {
	t.Helper()
	u := h.register(t, email, password, owner)
	h.do(t, http.MethodPost, "/auth/verify", map[string]string{"token": h.verificationToken(t, email, 1)}).expect(t, http.StatusOK, "")
	return u, h.login(t, email, password)
}

// loginAdmin returns a session of the bootstrap admin.
func (h *harness) loginAdmin(t testing.TB) tokensBody {
	t.Helper()
	return h.login(t, adminEmail, adminPassword)
}

// verificationToken waits for the nth verification mail to email (1 is
// the first) and returns the token of its link.
func (h *harness) verificationToken(t testing.TB, email string, nth int) string {
	t.Helper()
	if h.SMTP == nil {
		t.Fatalf("verificationToken needs the SMTP server (harnessOptions.NoSMTP is set)")
	}
	var tokens []string
	testenv.Eventually(t, 15*time.Second, func() bool {
		tokens = tokens[:0]
		for _, m := range h.SMTP.Messages() {
			if len(m.To) == 1 && m.To[0] == email {
				tokens = append(tokens, verificationTokenIn(t, m))
			}
		}
		return len(tokens) >= nth
	}, "verification mail to "+email)
	return tokens[nth-1]
}

// mailsTo counts the messages received for email so far.
func (h *harness) mailsTo(email string) int {
	n := 0
	for _, m := range h.SMTP.Messages() {
		if len(m.To) == 1 && m.To[0] == email {
			n++
		}
	}
	return n
}

// verificationTokenIn parses a mail as a client would and returns the
// token of the verification link in its body.
func verificationTokenIn(t testing.TB, m testenv.Mail) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		t.Fatalf("parse mail: %v\n%s", err, m.Data)
	}
	var body io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	text, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read mail body: %v", err)
	}
	return tokenInLink(t, string(text))
}

// tokenInLink finds the verification link in text and returns its token.
func tokenInLink(t testing.TB, text string) string {
	t.Helper()
	const prefix = "http://tenantbase.test/auth/verify?"
	i := strings.Index(text, prefix)
	if i < 0 {
		t.Fatalf("no verification link in %q", text)
	}
	link := strings.Fields(text[i:])[0]
	u, err := url.Parse(link)
	if err != nil {
		t.Fatalf("parse link %q: %v", link, err)
	}
	token := u.Query().Get("token")
	if token == "" {
		t.Fatalf("link %q has no token", link)
	}
	return token
}

// logBuffer collects the service's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLines returns every log line written so far, decoded.
func (h *harness) logLines(t testing.TB) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<24)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		lines = append(lines, line)
	}
	return lines
}
