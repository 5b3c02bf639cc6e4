package page_test

import (
	"errors"
	"net/url"
	"reflect"
	"strconv"
	"testing"

	"tenantbase/libs/apperr"
	"tenantbase/libs/page"
)

// field returns the field a validation error names, or "".
func field(err error) string {
	var v *apperr.ValidationError
	if errors.As(err, &v) && len(v.Fields) == 1 {
		return v.Fields[0].Field
	}
	return ""
}

func TestFromQueryAndNormalize(t *testing.T) {
	cases := []struct {
		name    string
		query   string
		want    page.Request
		invalid string
	}{
		{name: "no parameters take the default limit", query: "", want: page.Request{Limit: page.DefaultLimit}},
		{name: "limit and cursor", query: "limit=2&cursor=17", want: page.Request{Limit: 2, Cursor: 17}},
		{name: "largest limit", query: "limit=200", want: page.Request{Limit: page.MaxLimit}},
		{name: "limit over the maximum", query: "limit=201", invalid: "limit"},
		{name: "zero limit", query: "limit=0", invalid: "limit"},
		{name: "negative limit", query: "limit=-5", invalid: "limit"},
		{name: "limit not a number", query: "limit=ten", invalid: "limit"},
		{name: "limit overflowing int", query: "limit=99999999999999999999999", invalid: "limit"},
		{name: "cursor not a number", query: "cursor=abc", invalid: "cursor"},
		{name: "zero cursor", query: "cursor=0", invalid: "cursor"},
		{name: "negative cursor", query: "cursor=-3", invalid: "cursor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			r, err := page.FromQuery(q)
			if err == nil {
				r, err = r.Normalize()
			}
			if got := field(err); got != tc.invalid || (err != nil && tc.invalid == "") {
				t.Fatalf("error %v naming %q, want one naming %q", err, got, tc.invalid)
			}
			if err == nil && r != tc.want {
				t.Fatalf("request %+v, want %+v", r, tc.want)
			}
		})
	}
}

func TestNormalizeRejectsANegativeCursor(t *testing.T) {
	if _, err := (page.Request{Cursor: -1}).Normalize(); field(err) != "cursor" {
		t.Fatalf("error %v, want one naming cursor", err)
	}
}

func TestOf(t *testing.T) {
	id := func(n int) int64 { return int64(n) }
	ptr := func(s string) *string { return &s }
	cases := []struct {
		name  string
		rows  []int
		limit int
		want  page.Page[int]
	}{
		{name: "no rows", rows: nil, limit: 2, want: page.Page[int]{Items: []int{}}},
		{name: "fewer rows than the limit", rows: []int{4}, limit: 2, want: page.Page[int]{Items: []int{4}}},
		{name: "exactly the limit", rows: []int{4, 7}, limit: 2, want: page.Page[int]{Items: []int{4, 7}}},
		{name: "one row more than the limit", rows: []int{4, 7, 9}, limit: 2, want: page.Page[int]{Items: []int{4, 7}, NextCursor: ptr("7")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := page.Of(tc.rows, tc.limit, id); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("page %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMapKeepsTheCursor(t *testing.T) {
	next := "7"
	got := page.Map(page.Page[int]{Items: []int{4, 7}, NextCursor: &next}, strconv.Itoa)
	if !reflect.DeepEqual(got.Items, []string{"4", "7"}) || got.NextCursor != &next {
		t.Fatalf("mapped page %+v", got)
	}
	if empty := page.Map(page.Page[int]{}, strconv.Itoa); empty.Items == nil {
		t.Fatal("an empty page maps to null items, want []")
	}
}
