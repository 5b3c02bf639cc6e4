package main

import (
	"strings"
	"testing"
)

func TestIsHelper(t *testing.T) {
	for path, want := range map[string]bool{
		"tenantbase/libs/testenv":                  true,
		"tenantbase/libs/openapitest":              true,
		"tenantbase/services/control-plane/cptest": true,
		"net/http/httptest":                        true,
		"tenantbase/libs/testenv/internal":         false,
		"tenantbase/libs/pgcluster":                false,
		"tenantbase/libs/testing":                  false,
		"testing":                                  false,
	} {
		if got := isHelper(path); got != want {
			t.Errorf("isHelper(%q) = %v, want %v", path, got, want)
		}
	}
}

// The fixture module holds one offender (app imports apptest), a helper
// importing another helper (allowed), and a package whose internal and
// external tests import helpers (allowed).
func TestFixtureReportsOnlyTheNonTestImport(t *testing.T) {
	// The fixture is a module of its own, outside the workspace.
	t.Setenv("GOWORK", "off")
	pkgs, err := list("testdata/fixture", []string{"./..."})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 4 {
		t.Fatalf("go list gave %d packages, want the fixture's 4", len(pkgs))
	}
	var out strings.Builder
	n := report(&out, check(pkgs))
	want := "testdata/fixture/app/app.go:7: fixture/app imports test helper fixture/apptest outside _test.go files\n"
	if n != 1 || out.String() != want {
		t.Fatalf("report gave %d violations:\n%s\nwant 1:\n%s", n, out.String(), want)
	}
}

func TestListFailsOnABrokenPattern(t *testing.T) {
	t.Setenv("GOWORK", "off")
	if _, err := list("testdata/fixture", []string{"./nosuchdir"}); err == nil {
		t.Fatal("go list of a missing directory: no error")
	}
}
