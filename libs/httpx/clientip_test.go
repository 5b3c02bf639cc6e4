package httpx_test

import (
	"net/http"
	"testing"

	"tenantbase/libs/httpx"
)

func TestClientIP(t *testing.T) {
	trusted, err := httpx.ParseTrustedProxies("127.0.0.1, 10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		remote string
		header map[string][]string
		want   string
	}{
		{name: "untrusted peer, no headers", remote: "203.0.113.7:5000", want: "203.0.113.7"},
		{name: "untrusted peer cannot claim an address", remote: "203.0.113.7:5000",
			header: map[string][]string{"X-Real-Ip": {"198.51.100.1"}, "X-Forwarded-For": {"198.51.100.1"}}, want: "203.0.113.7"},
		{name: "trusted ingress reports the client", remote: "10.1.2.3:5000",
			header: map[string][]string{"X-Real-Ip": {"198.51.100.1"}}, want: "198.51.100.1"},
		{name: "trusted ingress without X-Real-IP: the hop it appended", remote: "127.0.0.1:5000",
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.9, 198.51.100.2"}}, want: "198.51.100.2"},
		{name: "trusted ingress with garbage", remote: "127.0.0.1:5000",
			header: map[string][]string{"X-Real-Ip": {"not-an-ip"}}, want: "127.0.0.1"},
		{name: "IPv6 peer", remote: "[2001:db8::1]:443", want: "2001:db8::1"},
		{name: "IPv4-mapped peer", remote: "[::ffff:203.0.113.7]:443", want: "203.0.113.7"},
		{name: "no peer", remote: "", want: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header(tc.header)}
			if got := httpx.ClientIP(r, trusted); got != tc.want {
				t.Fatalf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := httpx.ParseTrustedProxies("10.0.0.0/8,nonsense"); err == nil {
		t.Fatal("a bad entry was accepted")
	}
}
