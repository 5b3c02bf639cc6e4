// Package api is tenantctl's client of the control plane's public API: JSON
// requests, RFC 9457 problems returned as *Error, list pages followed to the
// end, and the session (access and refresh tokens) kept in a file and
// refreshed when the access token runs out.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Error is an answer of the API that is not a success: the problem it
// carried, or what could be said of a body that was no problem.
type Error struct {
	Status int
	Code   string
	Detail string
	Fields []FieldError
}

// FieldError names one input field the API refused.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code
	}
	return e.Detail + " (" + e.Code + ")"
}

// Request is one call of the API.
type Request struct {
	Method string
	// Path is the path below the base URL, e.g. /organizations/12.
	Path  string
	Query url.Values
	// Body is sent as JSON; nil sends none.
	Body any
	// Anonymous calls send no access token (login, refresh, logout).
	Anonymous bool
}

// Get is a GET of path with query (nil for none); it, Post, Patch and
// Delete build the requests of most commands.
func Get(path string, query url.Values) Request {
	return Request{Method: http.MethodGet, Path: path, Query: query}
}

// Post is a POST of body (nil for none).
func Post(path string, body any) Request {
	return Request{Method: http.MethodPost, Path: path, Body: body}
}

// Patch is a PATCH of body.
func Patch(path string, body any) Request {
	return Request{Method: http.MethodPatch, Path: path, Body: body}
}

// Delete is a DELETE without body.
func Delete(path string) Request { return Request{Method: http.MethodDelete, Path: path} }

// Client calls one control plane.
type Client struct {
	// BaseURL is the control plane's public URL, without a trailing slash.
	BaseURL string
	HTTP    *http.Client
	// Sessions holds the tokens of authenticated calls.
	Sessions *Store
	// UserAgent names the program in each request.
	UserAgent string
}

// NewClient returns a client of the control plane at baseURL keeping its
// session in sessions.
func NewClient(baseURL string, sessions *Store, userAgent string) *Client {
	return &Client{
		BaseURL:   strings.TrimRight(baseURL, "/"),
		HTTP:      &http.Client{Timeout: 30 * time.Second},
		Sessions:  sessions,
		UserAgent: userAgent,
	}
}

// Do sends req and decodes a successful answer into out (nil to discard
// it; a *json.RawMessage keeps it exactly as sent). Authenticated calls
// refresh the access token when it has run out, or when the API refuses it
// as it is, and repeat the call once with the new one.
func (c *Client) Do(ctx context.Context, req Request, out any) error {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = json.Marshal(req.Body); err != nil {
			return err
		}
	}
	if req.Anonymous {
		return c.send(ctx, req, body, "", out)
	}
	sess, err := c.Sessions.Session(c.BaseURL)
	if err != nil {
		return err
	}
	refreshed := false
	if sess.expiring() {
		if sess, err = c.refresh(ctx, sess.AccessToken); err != nil {
			return err
		}
		refreshed = true
	}
	err = c.send(ctx, req, body, sess.AccessToken, out)
	var apiErr *Error
	if refreshed || !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized || apiErr.Code != "unauthorized" {
		return err
	}
	// Refused as it is: expired early (clocks differ) or signed with a key
	// the control plane no longer has. A fresh token says which.
	if sess, err = c.refresh(ctx, sess.AccessToken); err != nil {
		return err
	}
	return c.send(ctx, req, body, sess.AccessToken, out)
}

func (c *Client) send(ctx context.Context, req Request, body []byte, token string, out any) error {
	u := c.BaseURL + req.Path
	if len(req.Query) > 0 {
		u += "?" + req.Query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json, application/problem+json")
	if c.UserAgent != "" {
		hr.Header.Set("User-Agent", c.UserAgent)
	}
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.HTTP.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("cannot reach the control plane at %s: %w", c.BaseURL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", req.Method, req.Path, err)
	}
	if res.StatusCode >= 300 {
		return problemOf(res, b)
	}
	if out == nil || res.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", req.Method, req.Path, err)
	}
	return nil
}

// problemOf reads an error answer: a problem+json body, or anything else a
// proxy in front of the control plane may have sent.
func problemOf(res *http.Response, b []byte) *Error {
	e := &Error{Status: res.StatusCode}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	var p struct {
		Title  string       `json:"title"`
		Detail string       `json:"detail"`
		Code   string       `json:"code"`
		Errors []FieldError `json:"errors"`
	}
	if (mt == "application/problem+json" || mt == "application/json") && json.Unmarshal(b, &p) == nil && p.Code != "" {
		e.Code, e.Detail, e.Fields = p.Code, p.Detail, p.Errors
		if e.Detail == "" {
			e.Detail = p.Title
		}
		return e
	}
	e.Code = "http_" + strconv.Itoa(res.StatusCode)
	e.Detail = http.StatusText(res.StatusCode)
	if first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n"); first != "" && len(first) < 200 {
		e.Detail += ": " + first
	}
	return e
}

// page is one answer of a list endpoint.
type page struct {
	Items      []json.RawMessage `json:"items"`
	NextCursor *string           `json:"next_cursor"`
}

// List fetches every item of a list endpoint, following next_cursor from
// page to page with limit items per page (0: the API's default).
func (c *Client) List(ctx context.Context, path string, query url.Values, limit int) ([]json.RawMessage, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	items := []json.RawMessage{}
	for {
		var p page
		if err := c.Do(ctx, Get(path, q), &p); err != nil {
			return nil, err
		}
		items = append(items, p.Items...)
		if p.NextCursor == nil || *p.NextCursor == "" {
			return items, nil
		}
		if q.Get("cursor") == *p.NextCursor {
			return nil, fmt.Errorf("GET %s: the API answered the same next_cursor %q twice", path, *p.NextCursor)
		}
		q.Set("cursor", *p.NextCursor)
	}
}

// Tokens is what login and refresh answer.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
}

// Login exchanges email and password for a session, stored as the current
// one; a session this client had before is ended.
func (c *Client) Login(ctx context.Context, email, password string) error {
	var tok Tokens
	err := c.Do(ctx, Request{Method: http.MethodPost, Path: "/auth/login", Anonymous: true,
		Body: map[string]string{"email": email, "password": password}}, &tok)
	if err != nil {
		return err
	}
	var old *Session
	err = c.Sessions.Update(func(f *File) error {
		old = f.Sessions[c.BaseURL]
		f.Sessions[c.BaseURL] = newSession(email, tok)
		f.Current = c.BaseURL
		return nil
	})
	if err != nil {
		return err
	}
	if old != nil {
		// Best effort: the old refresh token would stay valid until it
		// expires otherwise.
		_ = c.logout(ctx, old.RefreshToken)
	}
	return nil
}

// Logout ends the session with the control plane and forgets it. It
// reports whether there was one.
func (c *Client) Logout(ctx context.Context) (bool, error) {
	var old *Session
	err := c.Sessions.Update(func(f *File) error {
		old = f.Sessions[c.BaseURL]
		delete(f.Sessions, c.BaseURL)
		if f.Current == c.BaseURL {
			f.Current = ""
		}
		return nil
	})
	if err != nil || old == nil {
		return false, err
	}
	return true, c.logout(ctx, old.RefreshToken)
}

func (c *Client) logout(ctx context.Context, refreshToken string) error {
	return c.Do(ctx, Request{Method: http.MethodPost, Path: "/auth/logout", Anonymous: true,
		Body: map[string]string{"refresh_token": refreshToken}}, nil)
}

// refresh rotates the refresh token of the session whose access token is
// stale, under the store's lock: a refresh token works once, and the
// control plane ends the whole session when a used one is presented again,
// so two tenantctl processes must not both present it. The second finds
// the session already refreshed by the first and uses it.
func (c *Client) refresh(ctx context.Context, stale string) (*Session, error) {
	var sess *Session
	var ended error
	err := c.Sessions.Update(func(f *File) error {
		cur := f.Sessions[c.BaseURL]
		if cur == nil {
			return notLoggedIn(c.BaseURL)
		}
		if cur.AccessToken != stale && !cur.expiring() {
			sess = cur
			return nil
		}
		var tok Tokens
		err := c.Do(ctx, Request{Method: http.MethodPost, Path: "/auth/refresh", Anonymous: true,
			Body: map[string]string{"refresh_token": cur.RefreshToken}}, &tok)
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
			// Forgotten, so that the next command says "not logged in".
			delete(f.Sessions, c.BaseURL)
			ended = &Error{Status: http.StatusUnauthorized, Code: apiErr.Code,
				Detail: "the session with " + c.BaseURL + " has ended; run tenantctl login"}
			return nil
		}
		if err != nil {
			return err
		}
		sess = newSession(cur.Email, tok)
		f.Sessions[c.BaseURL] = sess
		return nil
	})
	if err == nil {
		err = ended
	}
	return sess, err
}

func notLoggedIn(baseURL string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "not_logged_in",
		Detail: "not logged in to " + baseURL + "; run tenantctl login"}
}
