// Command importcheck fails when a package's non-test files import a test
// helper, so that helpers (and the servers, fixtures and testing flags they
// bring) never reach a binary.
//
// A test helper is a package whose import path's last element is testenv or
// ends in "test": tenantbase/libs/testenv, tenantbase/libs/openapitest,
// tenantbase/services/control-plane/cptest, and the standard library's
// net/http/httptest alike. Helpers may import each other, and any package's
// _test.go files may import them.
//
// Usage, in a module's directory: importcheck [packages] (default ./...).
// It prints one line per offending import, file:line first, and exits 1 when
// there is any.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	patterns := os.Args[1:]
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	pkgs, err := list(".", patterns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "importcheck: "+err.Error())
		os.Exit(2)
	}
	if report(os.Stdout, check(pkgs)) > 0 {
		os.Exit(1)
	}
}

// pkg is the part of `go list -json` the check reads. Imports are those of
// the package's non-test files only (TestImports and XTestImports hold the
// rest).
type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
}

// violation is one import of a helper by a package that is not one.
type violation struct {
	pkg    pkg
	helper string
}

func isHelper(importPath string) bool {
	last := path.Base(importPath)
	return last == "testenv" || strings.HasSuffix(last, "test")
}

func check(pkgs []pkg) []violation {
	var bad []violation
	for _, p := range pkgs {
		if isHelper(p.ImportPath) {
			continue
		}
		for _, imp := range p.Imports {
			if isHelper(imp) {
				bad = append(bad, violation{pkg: p, helper: imp})
			}
		}
	}
	return bad
}

// report prints each violation, naming the importing file and line when
// they can be found, and returns how many there were.
func report(w io.Writer, bad []violation) int {
	for _, v := range bad {
		where := v.pkg.ImportPath
		if pos := importPos(v.pkg, v.helper); pos != "" {
			where = pos + ": " + where
		}
		fmt.Fprintf(w, "%s imports test helper %s outside _test.go files\n", where, v.helper)
	}
	return len(bad)
}

// importPos is file:line of the first non-test file of p that imports
// helper, relative to the working directory when it can be, or "".
func importPos(p pkg, helper string) string {
	fset := token.NewFileSet()
	for _, name := range append(append([]string(nil), p.GoFiles...), p.CgoFiles...) {
		file := filepath.Join(p.Dir, name)
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			continue
		}
		for _, spec := range f.Imports {
			if v, err := strconv.Unquote(spec.Path.Value); err == nil && v == helper {
				if wd, err := os.Getwd(); err == nil {
					if rel, err := filepath.Rel(wd, file); err == nil {
						file = rel
					}
				}
				return file + ":" + strconv.Itoa(fset.Position(spec.Pos()).Line)
			}
		}
	}
	return ""
}

// list runs `go list -json` on patterns in dir.
func list(dir string, patterns []string) ([]pkg, error) {
	args := append([]string{"list", "-json=ImportPath,Dir,GoFiles,CgoFiles,Imports"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %v: %s", strings.Join(patterns, " "), err, strings.TrimSpace(stderr.String()))
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}
