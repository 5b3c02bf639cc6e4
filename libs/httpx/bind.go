package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/apperr"
	"tenantbase/libs/problem"
)

// Bind decodes the JSON request body into v strictly: a body that is not
// declared JSON is a 415, malformed JSON or a wrong type is a 400, an
// unknown field is a 422 naming it, a body over the limit is a 413.
func Bind(c echo.Context, v any) error {
	if !isJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return problem.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
	}
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bindError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		// The value may fit under the size limit while the body does not:
		// the limit then shows up only here.
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return he
		}
		return problem.New(http.StatusBadRequest, "malformed_json", "request body must hold a single JSON object")
	}
	return nil
}

// isJSON reports whether a Content-Type names JSON: application/json or a
// +json type, compared without regard to case (RFC 9110). A missing one is
// not JSON: the API promises 415 for anything else.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == echo.MIMEApplicationJSON || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")))
}

func bindError(err error) error {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return he
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return problem.New(http.StatusBadRequest, "malformed_json", "request body is empty")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return problem.New(http.StatusBadRequest, "malformed_json", "field "+field+" has the wrong type")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return apperr.Invalid(name, "unknown field")
	case err.Error() == "http: request body too large":
		return problem.New(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds 1 MiB")
	}
	return problem.New(http.StatusBadRequest, "malformed_json", "request body is not valid JSON")
}

func jsonEncode(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
