// Package tenantdbtest makes real tenant databases for tests that serve
// tenants without a control plane: a login role with a random password
// that owns a database closed to PUBLIC, migrated as that role, as
// provisioning leaves them.
package tenantdbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"path"
	"strconv"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
)

// New creates a migrated tenant database and its role on the test server
// and returns how to reach it; both are dropped when the test ends.
func New(tb testing.TB) tenantapi.Database {
	tb.Helper()
	server := testenv.PostgresURL(tb)
	u, err := url.Parse(server)
	if err != nil {
		tb.Fatalf("tenantdbtest: %v", err)
	}
	port, _ := strconv.Atoi(u.Port())
	if port == 0 {
		port = 5432
	}
	b := make([]byte, 8)
	rand.Read(b)
	name := "test_tenant_" + hex.EncodeToString(b)
	rand.Read(b)
	password := hex.EncodeToString(b)
	id := pgx.Identifier{name}.Sanitize()
	testenv.Exec(tb, server, "CREATE ROLE "+id+" LOGIN PASSWORD '"+password+"'")
	testenv.Exec(tb, server, "CREATE DATABASE "+id+" OWNER "+id)
	tb.Cleanup(func() {
		testenv.Exec(tb, server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)")
		testenv.Exec(tb, server, "DROP ROLE IF EXISTS "+id)
	})
	testenv.Exec(tb, server, "REVOKE CONNECT, TEMPORARY ON DATABASE "+id+" FROM PUBLIC")
	db := tenantapi.Database{Host: u.Hostname(), Port: port, Name: name, User: name, Password: tenantapi.Password(password)}
	if _, err := tenantdb.Migrate(DSN(db)); err != nil {
		tb.Fatalf("tenantdbtest: migrate %s: %v", name, err)
	}
	return db
}

// DSN is a postgres:// URL for db as its own role.
func DSN(db tenantapi.Database) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(db.User, db.Password.Reveal()),
		Host:     net.JoinHostPort(db.Host, strconv.Itoa(db.Port)),
		Path:     "/" + db.Name,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// AddUser inserts an active user with role and password (hashed at
// bcrypt's minimum cost) into db and returns it.
func AddUser(tb testing.TB, db tenantapi.Database, email, password, role string) tenantdb.User {
	tb.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, DSN(db))
	if err != nil {
		tb.Fatalf("tenantdbtest: %v", err)
	}
	defer conn.Close(context.Background())
	u, err := tenantdb.InsertUser(ctx, conn, email, string(hash), role)
	if err != nil {
		tb.Fatalf("tenantdbtest: add %s: %v", email, err)
	}
	return u
}

// NextRelease is the embedded tenant migrations plus one more after the
// newest, with the up and down files given (named as "000004_name"), the
// way the next release would ship it; a control plane started with
// app.WithTenantMigrations of it has a migration to roll out to tenants
// provisioned before. Its Latest is the new version.
func NextRelease(tb testing.TB, name, up, down string) tenantdb.Migrations {
	tb.Helper()
	name = fmt.Sprintf("%06d_%s", tenantdb.LatestVersion()+1, name)
	fsys := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.Tenant, "tenant")
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		b, err := fs.ReadFile(migrations.Tenant, path.Join("tenant", e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		fsys["tenant/"+e.Name()] = &fstest.MapFile{Data: b}
	}
	fsys["tenant/"+name+".up.sql"] = &fstest.MapFile{Data: []byte(up)}
	fsys["tenant/"+name+".down.sql"] = &fstest.MapFile{Data: []byte(down)}
	m, err := tenantdb.NewMigrations(fsys, "tenant")
	if err != nil {
		tb.Fatal(err)
	}
	return m
}
