package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
)

// printer writes what commands answer on stdout: JSON exactly as the API
// sent it (indented), or tables for people.
type printer struct {
	w    io.Writer
	json bool
}

// object prints one API object: as JSON, or one "field  value" line per
// field in the API's order, the members of a nested object as lines of
// their own ("counts.done  3").
func (p printer) object(raw json.RawMessage) error {
	if p.json {
		return p.indented(raw)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	if err := writeFields(tw, "", raw); err != nil {
		return err
	}
	return tw.Flush()
}

func writeFields(w io.Writer, prefix string, raw json.RawMessage) error {
	fs, err := fields(raw)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if v := bytes.TrimSpace(f.value); len(v) > 0 && v[0] == '{' {
			if err := writeFields(w, prefix+f.name+".", v); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(w, "%s\t%s\n", clean(prefix+f.name), cell(f.value))
	}
	return nil
}

// list prints every item of a list: as JSON, the API's page with all of
// them and no next cursor, so that `jq '.items[]'` reads tenantctl's output
// and the API's alike; as a table, the columns named: JSON field names, or
// paths into nested objects ("counts.done", headed DONE).
func (p printer) list(items []json.RawMessage, columns ...string) error {
	if p.json {
		b, err := json.Marshal(struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor *string           `json:"next_cursor"`
		}{Items: items})
		if err != nil {
			return err
		}
		return p.indented(b)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	headers := make([]string, len(columns))
	for i, c := range columns {
		headers[i] = strings.ToUpper(c[strings.LastIndexByte(c, '.')+1:])
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, raw := range items {
		cells := make([]string, len(columns))
		for i, c := range columns {
			v, err := member(raw, c)
			if err != nil {
				return err
			}
			cells[i] = cell(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// member is the value at path ("status", "counts.done") in a JSON object;
// nil when it has none.
func member(raw json.RawMessage, path string) (json.RawMessage, error) {
	for name := range strings.SplitSeq(path, ".") {
		if v := bytes.TrimSpace(raw); len(v) == 0 || v[0] != '{' {
			return nil, nil
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		raw = m[name]
	}
	return raw, nil
}

// message prints a sentence for people; JSON output prints none.
func (p printer) message(format string, args ...any) {
	if !p.json {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

func (p printer) indented(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := p.w.Write(buf.Bytes())
	return err
}

type field struct {
	name  string
	value json.RawMessage
}

// fields are the members of a JSON object in the order they were sent.
func fields(raw json.RawMessage) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("the API answered %s where an object was expected", strings.TrimSpace(string(raw)))
	}
	var fs []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		fs = append(fs, field{name: tok.(string), value: v})
	}
	return fs, nil
}

// cell is a JSON value as a table shows it: strings without quotes, null
// and missing as "-", objects and arrays as compact JSON.
func cell(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0 || string(v) == "null":
		return "-"
	case v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return clean(s)
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) == nil {
		return clean(buf.String())
	}
	return clean(string(v))
}

// clean replaces control characters, so that a name chosen by a user can
// neither break a table's lines nor send escape sequences to the terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
