// Package accounts holds the control plane's core users: registration with
// email verification, login with access and refresh tokens, and the
// platform-admin view of users.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/logctx"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/audit"
)

// VerificationTTL is how long a verification link stays valid.
const VerificationTTL = 24 * time.Hour

// Domain errors; the service's error table maps them to problems.
var (
	ErrEmailTaken            = errors.New("an account with this email address already exists")
	ErrEmailNotVerified      = errors.New("the email address of this account is not verified yet")
	ErrOwnerSignupRestricted = errors.New("owner accounts are granted by platform admins only")
	ErrTokenInvalid          = errors.New("the verification token is unknown or was already used")
	ErrTokenExpired          = errors.New("the verification token has expired; ask for a new one")
	ErrUserNotFound          = errors.New("no such user")
	ErrLastAdmin             = errors.New("the last platform admin cannot be demoted")
	ErrInvitationInvalid     = errors.New("the invitation is unknown or was already accepted")
	ErrInvitationExpired     = errors.New("the invitation has expired; ask a platform admin for a new one")
)

// User is a core user as the API shows it: never the password hash.
type User struct {
	ID         int64  `json:"id"`
	Email      string `json:"email"`
	IsVerified bool   `json:"is_verified"`
	IsOwner    bool   `json:"is_owner"`
	IsAdmin    bool   `json:"is_admin"`
	// MaxOrganizations is the user's own limit of organizations; nil
	// means the deployment's default.
	MaxOrganizations *int      `json:"max_organizations"`
	CreatedAt        time.Time `json:"created_at"`
}

// Mailer delivers one plain-text message.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// DB is the core database: a pool, or a transaction in tests (a Begin on
// it is a savepoint).
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Options are the account rules taken from the service's configuration.
type Options struct {
	// PublicURL prefixes the verification link sent by mail.
	PublicURL string
	// OpenOwnerSignup lets anyone register as an owner; otherwise only
	// platform admins grant is_owner.
	OpenOwnerSignup bool
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	Throttle        auth.Throttle
	// DefaultMaxOrganizations is how many organizations (not deleted) an
	// owner may have unless a platform admin set their own limit.
	DefaultMaxOrganizations int
	// InvitationTTL is how long an invitation link stays valid.
	InvitationTTL time.Duration
	// Log is for what happens outside a request (mail sent after it);
	// the request's own logger is used where there is one.
	Log *slog.Logger
}

// Service implements the account flows on the core database.
type Service struct {
	db        DB
	passwords *auth.Passwords
	keys      *auth.Keys
	mailer    Mailer
	opts      Options
	// sending tracks verification mail still in flight, for Close.
	sending sync.WaitGroup
}

// New returns the account service.
func New(db DB, passwords *auth.Passwords, keys *auth.Keys, mailer Mailer, opts Options) *Service {
	return &Service{db: db, passwords: passwords, keys: keys, mailer: mailer, opts: opts}
}

// Close waits for verification mail still being sent.
func (s *Service) Close() { s.sending.Wait() }

// Registration is the input of Register.
type Registration struct {
	Email    string
	Password string
	IsOwner  bool
}

// Register creates an unverified user and mails a verification link. The
// mail goes out after the commit and in the background: a mail server that
// is down or slow neither fails nor delays the registration, and the user
// can ask for another link.
func (s *Service) Register(ctx context.Context, r Registration) (User, error) {
	email, err := auth.ValidateSignup(r.Email, r.Password)
	if err != nil {
		return User{}, err
	}
	if r.IsOwner && !s.opts.OpenOwnerSignup {
		return User{}, ErrOwnerSignupRestricted
	}
	hash, err := s.passwords.Hash(ctx, r.Password)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	token, tokenHash := auth.NewOpaqueToken()
	var u User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		if u, err = insertUser(ctx, tx, newUser{email: email, hash: hash, isOwner: r.IsOwner}); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.UserCreate, TargetType: audit.TargetUser, TargetID: audit.ID(u.ID),
			Detail: map[string]any{"via": "register", "email": u.Email, "is_owner": u.IsOwner}}); err != nil {
			return err
		}
		return insertVerificationToken(ctx, tx, u.ID, tokenHash, VerificationTTL)
	})
	if err != nil {
		return User{}, err
	}
	s.sendVerification(ctx, u.Email, token)
	return u, nil
}

// Verify spends a verification token and marks its user verified.
func (s *Service) Verify(ctx context.Context, token string) (User, error) {
	if token == "" {
		return User{}, apperr.Invalid("token", "is required")
	}
	var u User
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		userID, err := spendVerificationToken(ctx, tx, auth.HashToken(token))
		if err != nil {
			return err
		}
		if u, err = markVerified(ctx, tx, userID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: audit.UserVerify, TargetType: audit.TargetUser, TargetID: audit.ID(userID), ActorID: userID})
	})
	return u, err
}

// ResendVerification mails a fresh link to an unverified account and
// voids its older links. It reports nothing about whether the account
// exists or is verified: callers answer the same in every case.
func (s *Service) ResendVerification(ctx context.Context, rawEmail string) error {
	email, err := auth.NormalizeEmail("email", rawEmail)
	if err != nil {
		return err
	}
	token, tokenHash := auth.NewOpaqueToken()
	send := false
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		id, verified, err := lockUserByEmail(ctx, tx, email)
		if errors.Is(err, ErrUserNotFound) || verified {
			return nil
		}
		if err != nil {
			return err
		}
		if err := deleteUnusedVerificationTokens(ctx, tx, id); err != nil {
			return err
		}
		send = true
		return insertVerificationToken(ctx, tx, id, tokenHash, VerificationTTL)
	})
	if err != nil {
		return err
	}
	if send {
		s.sendVerification(ctx, email, token)
	}
	return nil
}

func (s *Service) sendVerification(ctx context.Context, email, token string) {
	link := strings.TrimRight(s.opts.PublicURL, "/") + "/auth/verify?token=" + url.QueryEscape(token)
	body := "Welcome to tenantbase.\n\n" +
		"Confirm your email address by opening this link within 24 hours:\n\n" +
		link + "\n\n" +
		"If you did not create an account, you can ignore this message.\n"
	// The request's logger stays with the send; its cancellation does not.
	ctx = context.WithoutCancel(ctx)
	s.sending.Add(1)
	go func() {
		defer s.sending.Done()
		if err := s.mailer.Send(ctx, email, "Verify your email address", body); err != nil {
			logctx.From(ctx, s.opts.Log).Error("verification mail not sent; the user can ask for another", "error", err.Error())
		}
	}()
}

// Login checks the credentials of a verified user and starts a session.
// Unknown emails cost as much time as wrong passwords, and repeated
// failures lock the account for a while (429 with Retry-After).
func (s *Service) Login(ctx context.Context, rawEmail, password string) (auth.Tokens, error) {
	id, err := auth.Login(ctx, logins{s.db}, s.passwords, s.opts.Throttle, rawEmail, password)
	if err != nil {
		return auth.Tokens{}, err
	}
	u, err := s.sessionUser(ctx, id, auth.ErrInvalidCredentials)
	if err != nil {
		return auth.Tokens{}, err
	}
	refresh, err := auth.IssueRefresh(ctx, s.db, u.ID, s.opts.RefreshTokenTTL)
	if err != nil {
		return auth.Tokens{}, err
	}
	return s.tokens(u, refresh)
}

// Refresh rotates a refresh token and issues an access token carrying the
// user's current flags. Presenting a token that was already rotated
// revokes its whole family.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (auth.Tokens, error) {
	id, next, err := auth.RotateRefresh(ctx, s.db, refreshToken, s.opts.RefreshTokenTTL)
	if err != nil {
		return auth.Tokens{}, err
	}
	u, err := s.sessionUser(ctx, id, auth.ErrInvalidRefresh)
	if err != nil {
		return auth.Tokens{}, err
	}
	return s.tokens(u, next)
}

// sessionUser loads the user a session is for, who must still be
// verified; gone is the answer for a user deleted since.
func (s *Service) sessionUser(ctx context.Context, id int64, gone error) (User, error) {
	u, err := s.User(ctx, id)
	if errors.Is(err, ErrUserNotFound) {
		return User{}, gone
	}
	if err != nil {
		return User{}, err
	}
	if !u.IsVerified {
		return User{}, ErrEmailNotVerified
	}
	return u, nil
}

// Logout revokes the session (the token family) refreshToken belongs to.
// Unknown tokens are accepted silently: the session is gone either way.
func (s *Service) Logout(ctx context.Context, refreshToken string) error {
	return auth.RevokeRefresh(ctx, s.db, refreshToken)
}

func (s *Service) tokens(u User, refresh string) (auth.Tokens, error) {
	return s.keys.Session(auth.CoreClaims{
		RegisteredClaims: s.keys.Registered(strconv.FormatInt(u.ID, 10), auth.CoreAudience, s.opts.AccessTokenTTL),
		IsOwner:          u.IsOwner,
		IsAdmin:          u.IsAdmin,
	}, s.opts.AccessTokenTTL, refresh)
}

// User returns the user with id, or ErrUserNotFound.
func (s *Service) User(ctx context.Context, id int64) (User, error) {
	return userByID(ctx, s.db, id)
}

// EnsureAdmin creates a verified platform admin (and owner) with email and
// password unless an account with that email exists; it reports whether
// it created one. Instances starting together create it once.
func (s *Service) EnsureAdmin(ctx context.Context, rawEmail, password string) (bool, error) {
	email, err := auth.NormalizeEmail("BOOTSTRAP_ADMIN_EMAIL", rawEmail)
	if err != nil {
		return false, err
	}
	if err := auth.ValidatePassword("BOOTSTRAP_ADMIN_PASSWORD", password); err != nil {
		return false, err
	}
	if _, err := userByEmail(ctx, s.db, email); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrUserNotFound) {
		return false, err
	}
	hash, err := s.passwords.Hash(ctx, password)
	if err != nil {
		return false, fmt.Errorf("hash password: %w", err)
	}
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		u, err := insertUser(ctx, tx, newUser{email: email, hash: hash, isOwner: true, isAdmin: true, isVerified: true})
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: audit.UserCreate, TargetType: audit.TargetUser, TargetID: audit.ID(u.ID),
			Detail: map[string]any{"via": "bootstrap", "email": u.Email, "is_owner": true, "is_admin": true}})
	})
	if errors.Is(err, ErrEmailTaken) {
		return false, nil
	}
	return err == nil, err
}

// UserQuery selects a page of users in id order.
type UserQuery struct {
	// EmailContains keeps users whose email contains it (case-insensitive).
	EmailContains string
	page.Request
}

// ListUsers returns one page of users (keyset pagination on id).
func (s *Service) ListUsers(ctx context.Context, q UserQuery) (page.Page[User], error) {
	r, err := q.Request.Normalize()
	if err != nil {
		return page.Page[User]{}, err
	}
	filter, err := auth.EmailFilter(q.EmailContains)
	if err != nil {
		return page.Page[User]{}, err
	}
	return listUsers(ctx, s.db, filter, r)
}

// UserPatch changes a user's flags; nil fields stay as they are.
type UserPatch struct {
	IsOwner    *bool
	IsAdmin    *bool
	IsVerified *bool
	// SetMaxOrganizations sets the user's own limit to MaxOrganizations
	// (nil: back to the deployment's default).
	SetMaxOrganizations bool
	MaxOrganizations    *int
}

// detail is what the audit log records of the patch.
func (p UserPatch) detail() map[string]any {
	d := map[string]any{}
	if p.IsOwner != nil {
		d["is_owner"] = *p.IsOwner
	}
	if p.IsAdmin != nil {
		d["is_admin"] = *p.IsAdmin
	}
	if p.IsVerified != nil {
		d["is_verified"] = *p.IsVerified
	}
	if p.SetMaxOrganizations {
		d["max_organizations"] = p.MaxOrganizations
	}
	return d
}

// UpdateUser applies patch to the user with id. Demoting the last
// platform admin is refused, so the platform always keeps one.
func (s *Service) UpdateUser(ctx context.Context, id int64, patch UserPatch) (User, error) {
	if patch.IsOwner == nil && patch.IsAdmin == nil && patch.IsVerified == nil && !patch.SetMaxOrganizations {
		return User{}, apperr.Invalid("body", "set at least one of is_owner, is_admin, is_verified, max_organizations")
	}
	if patch.MaxOrganizations != nil && (*patch.MaxOrganizations < 0 || *patch.MaxOrganizations > MaxOrganizationsLimit) {
		return User{}, apperr.Invalid("max_organizations", fmt.Sprintf("must be 0 to %d, or null for the default", MaxOrganizationsLimit))
	}
	var u User
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if patch.IsAdmin != nil && !*patch.IsAdmin {
			// Locking every admin row first makes two admins demoting
			// each other at once queue instead of both succeeding.
			admins, err := lockAdmins(ctx, tx)
			if err != nil {
				return err
			}
			if len(admins) == 1 && admins[0] == id {
				return ErrLastAdmin
			}
		}
		var err error
		if u, err = updateUserFlags(ctx, tx, id, patch); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: audit.UserUpdate, TargetType: audit.TargetUser, TargetID: audit.ID(id),
			Detail: patch.detail()})
	})
	return u, err
}

// MaxOrganizationsLimit bounds the limit an admin may set.
const MaxOrganizationsLimit = 100000

// ChangePassword replaces the password of user id after checking the
// current one (throttled like a login). The new hash, the revocation of the
// user's refresh tokens and whatever changed does (the job that carries the
// hash into the owner's tenant databases) commit together, so nothing is
// left behind if the process stops right after.
func (s *Service) ChangePassword(ctx context.Context, id int64, current, next string, changed func(tx pgx.Tx) error) error {
	if err := auth.ValidatePasswordChange(current, next); err != nil {
		return err
	}
	u, err := s.User(ctx, id)
	if err != nil {
		return err
	}
	if _, err := auth.CheckPassword(ctx, logins{s.db}, s.passwords, s.opts.Throttle, u.Email, current); err != nil {
		return err
	}
	hash, err := s.passwords.Hash(ctx, next)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := setPassword(ctx, tx, id, hash); err != nil {
			return err
		}
		if err := auth.RevokeAllRefresh(ctx, tx, id); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.UserPasswordChange, TargetType: audit.TargetUser, TargetID: audit.ID(id)}); err != nil {
			return err
		}
		return changed(tx)
	})
}
