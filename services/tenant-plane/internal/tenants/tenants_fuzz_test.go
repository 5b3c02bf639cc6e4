package tenants

import (
	"regexp"
	"strconv"
	"testing"
)

// FuzzParseID checks the X-TENANT parser against its definition: a
// positive decimal integer in ASCII digits without sign, spaces or leading
// zeros that fits in int64, and nothing else.
func FuzzParseID(f *testing.F) {
	for _, seed := range []string{"1", "42", "0", "01", "-1", "+1", " 1", "1 ", "1e3", "0x10", "9223372036854775807",
		"9223372036854775808", "99999999999999999999", "١", "1;DROP DATABASE x", ""} {
		f.Add(seed)
	}
	valid := regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseID(s)
		n, err := strconv.ParseInt(s, 10, 64)
		want := valid.MatchString(s) && err == nil && n > 0
		if ok != want || (ok && id != n) {
			t.Fatalf("ParseID(%q) = %d, %v; want %d, %v", s, id, ok, n, want)
		}
	})
}
