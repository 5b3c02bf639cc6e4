// Package accounts holds a tenant's users, in the tenant's own database:
// registration, login with access and refresh tokens, the user's profile
// and password, and the tenant admins' view of users.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/tenantdb"
)

// DB is one tenant's database: a handle that leases a connection per
// statement or transaction.
type DB interface {
	tenantdb.Querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Roles of tenant users.
const (
	RoleAdmin  = tenantdb.RoleAdmin
	RoleMember = tenantdb.RoleMember
)

// Domain errors; the service's error table maps them to problems.
var (
	ErrEmailTaken      = tenantdb.ErrEmailTaken
	ErrUserNotFound    = tenantdb.ErrUserNotFound
	ErrUserInactive    = errors.New("this user has been deactivated by a tenant admin")
	ErrLastAdmin       = errors.New("the last active admin of a tenant cannot be deactivated or demoted")
	ErrWrongPassword   = errors.New("the current password is wrong")
	ErrUnauthenticated = errors.New("a valid access token of this tenant is required")
)

// Account is a tenant user's whole row, the password hash aside.
type Account = tenantdb.User

// User is a tenant user as registration and the admin API show it.
type User struct {
	ID          int64     `json:"id"`
	Email       string    `json:"email"`
	Role        string    `json:"role"`
	IsActive    bool      `json:"is_active"`
	DisplayName *string   `json:"display_name"`
	CreatedAt   time.Time `json:"created_at"`
}

// Profile is what a user sees of themselves.
type Profile struct {
	ID          int64     `json:"id"`
	Email       string    `json:"email"`
	Role        string    `json:"role"`
	IsActive    bool      `json:"is_active"`
	DisplayName *string   `json:"display_name"`
	Bio         *string   `json:"bio"`
	AvatarURL   *string   `json:"avatar_url"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// UserOf is a's public view.
func UserOf(a Account) User {
	return User{ID: a.ID, Email: a.Email, Role: a.Role, IsActive: a.IsActive, DisplayName: a.DisplayName, CreatedAt: a.CreatedAt}
}

// ProfileOf is a's own view.
func ProfileOf(a Account) Profile {
	return Profile{ID: a.ID, Email: a.Email, Role: a.Role, IsActive: a.IsActive, DisplayName: a.DisplayName,
		Bio: a.Bio, AvatarURL: a.AvatarURL, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

// Claims are a tenant access token's claims: the shared tenant claims
// plus the user's token version, so that deactivation and a password
// change end every token issued before.
type Claims struct {
	auth.TenantClaims
	TokenVersion int `json:"tv"`
}

// Options are the account rules taken from the service's configuration.
type Options struct {
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	Throttle        auth.Throttle
}

// Service implements the account flows; every call names the tenant's database.
type Service struct {
	passwords *auth.Passwords
	keys      *auth.Keys
	opts      Options
}

// New returns the account service.
func New(passwords *auth.Passwords, keys *auth.Keys, opts Options) *Service {
	return &Service{passwords: passwords, keys: keys, opts: opts}
}

// Register creates an active member. The password is hashed before any
// connection is taken.
func (s *Service) Register(ctx context.Context, db DB, rawEmail, password string) (User, error) {
	email, err := auth.ValidateSignup(rawEmail, password)
	if err != nil {
		return User{}, err
	}
	hash, err := s.passwords.Hash(ctx, password)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	a, err := tenantdb.InsertUser(ctx, db, email, hash, RoleMember)
	if err != nil {
		return User{}, err
	}
	return UserOf(a), nil
}

// Login checks the credentials of an active user and starts a session.
// Unknown emails cost as much time as wrong passwords, and repeated
// failures lock the account for a while (429 with Retry-After). The
// password is checked before the active flag, so that only the holder
// of the password learns that the account is deactivated. The login is
// recorded (last_login_at) when the tenant's schemaVersion has the column.
func (s *Service) Login(ctx context.Context, db DB, tenantID int64, schemaVersion int, rawEmail, password string) (auth.Tokens, error) {
	id, err := auth.Login(ctx, tenantdb.Logins(db), s.passwords, s.opts.Throttle, rawEmail, password)
	if err != nil {
		return auth.Tokens{}, err
	}
	a, err := tenantdb.UserByID(ctx, db, id)
	if errors.Is(err, ErrUserNotFound) {
		return auth.Tokens{}, auth.ErrInvalidCredentials
	}
	if err != nil {
		return auth.Tokens{}, err
	}
	if !a.IsActive {
		return auth.Tokens{}, ErrUserInactive
	}
	refresh, err := auth.IssueRefresh(ctx, db, a.ID, s.opts.RefreshTokenTTL)
	if err != nil {
		return auth.Tokens{}, err
	}
	if err := tenantdb.RecordLogin(ctx, db, schemaVersion, a.ID); err != nil {
		return auth.Tokens{}, err
	}
	return s.tokens(tenantID, a, refresh)
}

// Refresh rotates a refresh token and issues an access token carrying the
// user's current role and token version. Presenting a token that was
// already rotated revokes its whole family.
func (s *Service) Refresh(ctx context.Context, db DB, tenantID int64, refreshToken string) (auth.Tokens, error) {
	id, next, err := auth.RotateRefresh(ctx, db, refreshToken, s.opts.RefreshTokenTTL)
	if err != nil {
		return auth.Tokens{}, err
	}
	a, err := tenantdb.UserByID(ctx, db, id)
	if errors.Is(err, ErrUserNotFound) {
		return auth.Tokens{}, auth.ErrInvalidRefresh
	}
	if err != nil {
		return auth.Tokens{}, err
	}
	if !a.IsActive {
		if err := auth.RevokeAllRefresh(ctx, db, a.ID); err != nil {
			return auth.Tokens{}, err
		}
		return auth.Tokens{}, ErrUserInactive
	}
	return s.tokens(tenantID, a, next)
}

// Logout revokes the session (the token family) refreshToken belongs to.
// Unknown tokens are accepted silently: the session is gone either way.
func (s *Service) Logout(ctx context.Context, db DB, refreshToken string) error {
	return auth.RevokeRefresh(ctx, db, refreshToken)
}

// Authenticate verifies an access token for tenantID and returns its
// user's current row. The token must be signed by this plane, be meant
// for this tenant (aud and tid), and carry the user's current token
// version; the user must still be active. Every failure is
// ErrUnauthenticated.
func (s *Service) Authenticate(ctx context.Context, db DB, tenantID int64, token string) (Account, error) {
	// Keys remembers tokens it verified: a token used again costs no
	// signature check, but is validated for this tenant each time.
	var claims Claims
	if err := s.keys.Parse(token, auth.TenantAudience(tenantID), &claims); err != nil {
		return Account{}, ErrUnauthenticated
	}
	if claims.TenantID != tenantID {
		return Account{}, ErrUnauthenticated
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id < 1 {
		return Account{}, ErrUnauthenticated
	}
	a, err := tenantdb.UserByID(ctx, db, id)
	if errors.Is(err, ErrUserNotFound) {
		return Account{}, ErrUnauthenticated
	}
	if err != nil {
		return Account{}, err
	}
	if !a.IsActive || a.TokenVersion != claims.TokenVersion {
		return Account{}, ErrUnauthenticated
	}
	return a, nil
}

// ChangePassword replaces a's password after checking the current one
// (throttled like a login), ends every other session and every access
// token issued before, and returns a fresh session.
func (s *Service) ChangePassword(ctx context.Context, db DB, tenantID int64, a Account, current, next string) (auth.Tokens, error) {
	err := auth.ValidatePasswordChange(current, next)
	if err == nil && next == current {
		err = apperr.Invalid("new_password", "must differ from the current password")
	}
	if err != nil {
		return auth.Tokens{}, err
	}
	id, err := auth.CheckPassword(ctx, tenantdb.Logins(db), s.passwords, s.opts.Throttle, a.Email, current)
	if errors.Is(err, auth.ErrInvalidCredentials) || (err == nil && id != a.ID) {
		return auth.Tokens{}, ErrWrongPassword
	}
	if err != nil {
		return auth.Tokens{}, err
	}
	hash, err := s.passwords.Hash(ctx, next)
	if err != nil {
		return auth.Tokens{}, fmt.Errorf("hash password: %w", err)
	}
	var (
		updated Account
		refresh string
	)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		if updated, err = tenantdb.SetPassword(ctx, tx, a.ID, hash); err != nil {
			return err
		}
		if err := auth.RevokeAllRefresh(ctx, tx, a.ID); err != nil {
			return err
		}
		if err := record(WithActor(ctx, a.ID), tx, tenantdb.AuditPasswordChange, a.ID, nil); err != nil {
			return err
		}
		refresh, err = auth.IssueRefresh(ctx, tx, a.ID, s.opts.RefreshTokenTTL)
		return err
	})
	if err != nil {
		return auth.Tokens{}, err
	}
	return s.tokens(tenantID, updated, refresh)
}

func (s *Service) tokens(tenantID int64, a Account, refresh string) (auth.Tokens, error) {
	return s.keys.Session(Claims{
		TenantClaims: auth.TenantClaims{
			RegisteredClaims: s.keys.Registered(strconv.FormatInt(a.ID, 10), auth.TenantAudience(tenantID), s.opts.AccessTokenTTL),
			TenantID:         tenantID,
			Role:             a.Role,
		},
		TokenVersion: a.TokenVersion,
	}, s.opts.AccessTokenTTL, refresh)
}
