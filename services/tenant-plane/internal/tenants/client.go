package tenants

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"tenantbase/libs/tenantapi"
)

// maxAnswerBytes bounds what is read from the control plane per lookup.
const maxAnswerBytes = 64 << 10

// Client reads tenants from the control plane's internal API
// (GET /internal/tenants/{id}), authenticated with the service token.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client of the internal API at baseURL.
func NewClient(baseURL, serviceToken string, hc *http.Client) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), token: serviceToken, http: hc}
}

// Tenant looks up one tenant: ErrNotFound when the control plane does not
// know it, any other error when it could not answer.
func (c *Client) Tenant(ctx context.Context, id int64) (Tenant, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+tenantapi.Path(id), nil)
	if err != nil {
		return Tenant{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenants: lookup %d: %w", id, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	if err != nil {
		return Tenant{}, fmt.Errorf("tenants: lookup %d: read answer: %w", id, err)
	}
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		// Only the API's own answer counts: a 404 for the route itself (a
		// wrong CONTROL_PLANE_URL) must not turn every tenant into "unknown".
		var p struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(body, &p) == nil && p.Code == tenantapi.CodeNotFound {
			return Tenant{}, ErrNotFound
		}
		return Tenant{}, fmt.Errorf("tenants: lookup %d: control plane answered 404 without tenant_not_found", id)
	default:
		return Tenant{}, fmt.Errorf("tenants: lookup %d: control plane answered %s", id, res.Status)
	}
	var t Tenant
	if err := json.Unmarshal(body, &t); err != nil {
		return Tenant{}, fmt.Errorf("%w: %v", errBadDirectory, err)
	}
	if err := t.Validate(id); err != nil {
		return Tenant{}, fmt.Errorf("%w: %v", errBadDirectory, err)
	}
	return t, nil
}
