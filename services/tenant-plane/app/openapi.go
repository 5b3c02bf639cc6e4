package app

import _ "embed"

// OpenAPI is the tenant plane's public API contract, served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
