// Package migrations embeds the SQL migrations of the core database and of
// every tenant database, so both services ship them inside their binaries.
// The files are plain golang-migrate files and run with the stock migrate CLI too.
package migrations

import "embed"

// Core holds the core database migrations (directory "core").
//
//go:embed core/*.sql
var Core embed.FS

// Tenant holds the migrations applied to each tenant database (directory "tenant").
//
//go:embed tenant/*.sql
var Tenant embed.FS
