package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// stopper stands in for a test and stops at the first failure, as
// testing.T does.
type stopper struct {
	testing.TB
	failure string
}

func (s *stopper) Helper() {}

// Error records what the cleanup of a service that failed to stop reports.
func (s *stopper) Error(args ...any) { s.failure = fmt.Sprint(args...) }

func (s *stopper) Fatalf(format string, args ...any) {
	s.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs f on its own goroutine and returns its first failure, "" for none.
func failure(t *testing.T, f func(tb testing.TB)) string {
	s := &stopper{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(s)
	}()
	<-done
	return s.failure
}

func TestJSONRequest(t *testing.T) {
	cases := []struct {
		name        string
		body        any
		wantBody    string
		contentType string
	}{
		{name: "no body", body: nil, wantBody: "", contentType: ""},
		{name: "raw bytes as they are", body: []byte("{not json"), wantBody: "{not json", contentType: "application/json"},
		{name: "a value as JSON", body: map[string]int{"a": 1}, wantBody: `{"a":1}`, contentType: "application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := JSONRequest(t, http.MethodPost, "http://example.test/x", tc.body)
			b, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.wantBody || req.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("body %q with Content-Type %q, want %q with %q", b, req.Header.Get("Content-Type"), tc.wantBody, tc.contentType)
			}
		})
	}
}

func TestSendAndResponseChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"n":7}`))
		case "/problem":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"type":"https://tenantbase.dev/problems/not_found","title":"Not Found","status":404,"code":"not_found"}`))
		case "/untitled":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"status":404,"code":"not_found"}`))
		default:
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte("404 page not found"))
		}
	}))
	defer srv.Close()
	checked := 0
	send := func(tb testing.TB, path string) *Response {
		return Send(tb, srv.Client(), JSONRequest(tb, http.MethodGet, srv.URL+path+"?q=1", nil),
			func(testing.TB, *http.Request, *http.Response) { checked++ })
	}

	res := send(t, "/ok")
	var v struct{ N int }
	res.Expect(t, http.StatusOK).Decode(t, &v)
	if v.N != 7 || res.Method != http.MethodGet || res.Path != "/ok?q=1" || checked != 1 {
		t.Fatalf("response %+v decoded to %+v after %d checks", res, v, checked)
	}

	cases := []struct {
		name  string
		check func(tb testing.TB)
		want  string
	}{
		{"expected status", func(tb testing.TB) { send(tb, "/ok").Expect(tb, http.StatusOK) }, ""},
		{"other status", func(tb testing.TB) { send(tb, "/ok").Expect(tb, http.StatusCreated) }, "status 200, want 201"},
		{"body of another shape", func(tb testing.TB) { var n int; send(tb, "/ok").Decode(tb, &n) }, "decode 200"},
		{"expected problem", func(tb testing.TB) { send(tb, "/problem").ExpectProblem(tb, http.StatusNotFound, "not_found") }, ""},
		{"problem of another code", func(tb testing.TB) { send(tb, "/problem").ExpectProblem(tb, http.StatusNotFound, "gone") }, `problem code "not_found", want "gone"`},
		{"problem of another status", func(tb testing.TB) { send(tb, "/problem").ExpectProblem(tb, http.StatusGone, "not_found") }, "status 404, want 410"},
		{"problem without type and title", func(tb testing.TB) { send(tb, "/untitled").Problem(tb) }, "malformed problem"},
		{"no problem at all", func(tb testing.TB) { send(tb, "/text").Problem(tb) }, `Content-Type "text/plain"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := failure(t, tc.check)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("failure %q, want one containing %q", got, tc.want)
			}
		})
	}
}

func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	if b.Lines() != nil {
		t.Fatalf("empty buffer has lines %q", b.Lines())
	}
	slog.New(slog.NewJSONHandler(&b, nil)).Info("first", "n", 1)
	b.Write([]byte(`{"msg":"second"}` + "\n"))
	lines := b.JSONLines(t)
	if len(lines) != 2 || lines[0]["msg"] != "first" || lines[0]["n"] != 1.0 || lines[1]["msg"] != "second" {
		t.Fatalf("lines %v", lines)
	}
	b.Write([]byte("not json\n"))
	if got := failure(t, func(tb testing.TB) { b.JSONLines(tb) }); !strings.Contains(got, "not JSON") {
		t.Fatalf("failure %q, want one about a line that is not JSON", got)
	}
}

func TestStartService(t *testing.T) {
	t.Run("runs until stopped", func(t *testing.T) {
		svc, addr := StartService(t, "echo", slog.LevelInfo, func(ctx context.Context, log *slog.Logger, ready func(string)) error {
			log.Debug("hidden below the level")
			log.Info("serving")
			ready("127.0.0.1:1")
			<-ctx.Done()
			return nil
		})
		if addr != "127.0.0.1:1" {
			t.Fatalf("addresses %q", addr)
		}
		if err := svc.Stop(); err != nil {
			t.Fatal(err)
		}
		if lines := svc.Logs.JSONLines(t); len(lines) != 1 || lines[0]["msg"] != "serving" {
			t.Fatalf("logs %v, want the info line only", lines)
		}
	})
	t.Run("an error on the way out is the result of Stop", func(t *testing.T) {
		boom := errors.New("boom")
		svc, _ := StartService(&stopper{TB: t}, "failing", slog.LevelInfo, func(ctx context.Context, _ *slog.Logger, ready func(int)) error {
			ready(1)
			<-ctx.Done()
			return boom
		})
		if err := svc.Stop(); !errors.Is(err, boom) {
			t.Fatalf("Stop = %v, want %v", err, boom)
		}
		if err := svc.Stop(); !errors.Is(err, boom) {
			t.Fatalf("second Stop = %v, want the first result", err)
		}
	})
	t.Run("returning before ready fails the test", func(t *testing.T) {
		got := failure(t, func(tb testing.TB) {
			StartService(tb, "broken", slog.LevelInfo, func(context.Context, *slog.Logger, func(int)) error {
				return errors.New("no port")
			})
		})
		if !strings.Contains(got, "broken did not start: no port") {
			t.Fatalf("failure %q", got)
		}
	})
}

func TestMailTextAndLinkIn(t *testing.T) {
	m := Mail{Data: "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Open http://app.test/verify?token=3Dabc-_1 within a day=\r\n.\r\n"}
	text := m.Text(t)
	if text != "Open http://app.test/verify?token=abc-_1 within a day.\r\n" {
		t.Fatalf("text %q", text)
	}
	if got := LinkIn(t, text, "http://app.test/verify?").Query().Get("token"); got != "abc-_1" {
		t.Fatalf("token %q", got)
	}
	if got := failure(t, func(tb testing.TB) { LinkIn(tb, text, "https://other.test/") }); !strings.Contains(got, "no link starting https://other.test/") {
		t.Fatalf("failure %q", got)
	}
}
