package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/openapitest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// The bootstrap admin every harness starts with (see harnessOptions.Config
// to change or remove it).
const (
	adminEmail    = cptest.AdminEmail
	adminPassword = cptest.AdminPassword
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

// harness is one control plane from cptest on a fresh database that the
// control plane migrates itself. Every response fetched through do is
// checked against the OpenAPI document.
type harness struct {
	*cptest.ControlPlane

	spec   *openapitest.Validator
	client *http.Client

	poolOnce sync.Once
	pool     *pgxpool.Pool
}

// startControlPlane runs the control plane until the test ends; the test
// fails if it does not stop cleanly.
func startControlPlane(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	// cptest.Start makes a core database whose deployment's tenant
	// databases and roles are dropped when the test ends.
	cp := cptest.Start(t, cptest.Options{DatabaseURL: opts.DatabaseURL, Configure: func(cfg *app.Config) {
		// What the tests assert on is pinned here, so that variables set in
		// the environment of a test run cannot change it.
		cfg.OwnerSignupPolicy = "open"
		cfg.AccessTokenTTL = 15 * time.Minute
		cfg.RefreshTokenTTL = 720 * time.Hour
		cfg.LoginMaxFailures = 5
		cfg.LoginLockout = 15 * time.Minute
		cfg.JWTIssuer = "tenantbase-control-plane"
		cfg.SMTPUsername, cfg.SMTPPassword = "", ""
		if opts.NoSMTP {
			cfg.SMTPAddr = ""
		}
		if opts.Config != nil {
			opts.Config(cfg)
		}
	}})
	h := &harness{ControlPlane: cp, spec: openapitest.New(t, app.OpenAPI), client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		if h.pool != nil {
			h.pool.Close()
		}
	})
	return h
}

// stop shuts the control plane down before the test ends.
func (h *harness) stop(t testing.TB) {
	t.Helper()
	if err := h.Stop(); err != nil {
		t.Error(err)
	}
}

// apiResponse is a response read to the end.
type apiResponse struct{ *testenv.Response }

// expect fails the test unless the status is want and, for problems, the
// code is code (pass "" for a success).
func (r *apiResponse) expect(t testing.TB, want int, code string) {
	t.Helper()
	if code == "" {
		r.Expect(t, want)
		return
	}
	r.ExpectProblem(t, want, code)
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
	if r.hasRaw {
		body = r.rawBody
	}
	req := testenv.JSONRequest(t, method, base+path, body)
	if r.chunked {
		raw, _ := io.ReadAll(req.Body)
		req.ContentLength = -1
		req.Body = io.NopCloser(bytes.NewReader(raw))
		req.GetBody = nil
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	var check func(testing.TB, *http.Request, *http.Response)
	if base == h.PublicURL && !r.undocument {
		check = h.spec.Check
	}
	return &apiResponse{testenv.Send(t, h.client, req, check)}
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
	res.Decode(t, &u)
	return u
}

// login returns a session for a verified user.
func (h *harness) login(t testing.TB, email, password string) tokensBody {
	t.Helper()
	res := h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": email, "password": password})
	res.expect(t, http.StatusOK, "")
	var tok tokensBody
	res.Decode(t, &tok)
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
	if h.Config.SMTPAddr == "" {
		t.Fatalf("verificationToken needs the SMTP server (harnessOptions.NoSMTP is set)")
	}
	var tokens []string
	testenv.Eventually(t, 15*time.Second, func() bool {
		tokens = tokens[:0]
		for _, m := range h.SMTP.Messages() {
			if len(m.To) == 1 && m.To[0] == email {
				tokens = append(tokens, tokenInLink(t, m.Text(t)))
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

// tokenInLink finds the verification link in text and returns its token.
func tokenInLink(t testing.TB, text string) string {
	t.Helper()
	link := testenv.LinkIn(t, text, "http://tenantbase.test/auth/verify?")
	token := link.Query().Get("token")
	if token == "" {
		t.Fatalf("link %q has no token", link)
	}
	return token
}
