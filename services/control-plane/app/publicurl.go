package app

import (
	"fmt"
	"net/url"
	"strings"
)

// CheckPublicURL refuses, when env is production, a PUBLIC_URL that is no
// absolute http(s) URL or whose host is under the reserved .invalid
// domain: the Kubernetes base ships https://CHANGE-ME.invalid, so that a
// deployment that forgot to set it does not start rather than mail
// verification links nobody can follow. The control plane's configuration
// check runs it; the manifest tests too.
func CheckPublicURL(env, publicURL string) error {
	if env != "production" {
		return nil
	}
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("PUBLIC_URL %q must be an absolute http or https URL", publicURL)
	}
	if host := strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")); host == "invalid" || strings.HasSuffix(host, ".invalid") {
		return fmt.Errorf("PUBLIC_URL %q is a placeholder: set it to where users reach the API", publicURL)
	}
	return nil
}
