// Package page is the keyset pagination every list of the API shares:
// ?limit= and ?cursor= in, {"items": [...], "next_cursor": ...} out, where
// the cursor is the id of the last item of the previous page.
package page

import (
	"fmt"
	"net/url"
	"strconv"

	"tenantbase/libs/apperr"
)

// Page sizes of every list.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

func errLimit() error {
	return apperr.Invalid("limit", fmt.Sprintf("must be between 1 and %d", MaxLimit))
}

func errCursor() error { return apperr.Invalid("cursor", "is not a cursor this API returned") }

// Request selects one page: at most Limit items past Cursor (0 for the
// first page).
type Request struct {
	Limit  int
	Cursor int64
}

// FromQuery reads ?limit and ?cursor; absent ones stay zero.
func FromQuery(q url.Values) (Request, error) {
	var r Request
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return Request{}, errLimit()
		}
		r.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return Request{}, errCursor()
		}
		r.Cursor = n
	}
	return r, nil
}

// Normalize gives a zero Limit the default and checks both bounds.
func (r Request) Normalize() (Request, error) {
	if r.Limit == 0 {
		r.Limit = DefaultLimit
	}
	if r.Limit < 1 || r.Limit > MaxLimit {
		return Request{}, errLimit()
	}
	if r.Cursor < 0 {
		return Request{}, errCursor()
	}
	return r, nil
}

// Page is one page of a list; NextCursor is nil on the last page.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// Of makes the page of at most limit items from rows, which were fetched
// with a limit of limit+1: a row beyond limit means there is a next page,
// which starts after the id of the last item kept.
func Of[T any](rows []T, limit int, id func(T) int64) Page[T] {
	p := Page[T]{Items: append(make([]T, 0, min(len(rows), limit)), rows[:min(len(rows), limit)]...)}
	if len(rows) > limit {
		next := strconv.FormatInt(id(p.Items[limit-1]), 10)
		p.NextCursor = &next
	}
	return p
}

// Map returns p with each item replaced by view(item).
func Map[T, U any](p Page[T], view func(T) U) Page[U] {
	out := Page[U]{Items: make([]U, 0, len(p.Items)), NextCursor: p.NextCursor}
	for _, item := range p.Items {
		out.Items = append(out.Items, view(item))
	}
	return out
}
