package httpx

import "testing"

func TestIsJSON(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		want        bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON", true},
		{"APPLICATION/JSON ; charset=UTF-8", true},
		{"application/problem+json", true},
		{"application/merge-patch+json", true},
		{"", false},
		{"text/plain", false},
		{"application/jsonx", false},
		{"application/json-seq", false},
		{"text/x+json", false},
		{"application/x-www-form-urlencoded", false},
		{"application/json;;", false},
	} {
		if got := isJSON(tc.contentType); got != tc.want {
			t.Errorf("isJSON(%q) = %v, want %v", tc.contentType, got, tc.want)
		}
	}
}
