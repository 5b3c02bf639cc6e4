package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/logctx"
	"tenantbase/services/control-plane/internal/audit"
)

// Owner is the core user a platform admin onboards an organization for.
type Owner struct {
	ID    int64
	Email string
	// Created is true when the account was created for this onboarding.
	Created bool
	// invitation is the single-use token to mail after the commit; empty
	// when the owner has a password already.
	invitation string
}

// Invited reports whether an invitation is to be mailed to the owner.
func (o Owner) Invited() bool { return o.invitation != "" }

// PrepareOwner makes the user with rawEmail an owner, in tx (the
// transaction that creates the organization): a known user gets is_owner,
// an unknown email an unverified account without a password and an
// invitation. A user invited before who has not accepted yet gets a fresh
// invitation, which voids the older ones. Mail the invitation with
// SendInvitation once tx committed.
func (s *Service) PrepareOwner(ctx context.Context, tx pgx.Tx, rawEmail string) (Owner, error) {
	email, err := auth.NormalizeEmail("owner_email", rawEmail)
	if err != nil {
		return Owner{}, err
	}
	u, hasPassword, err := lockUserForOnboarding(ctx, tx, email)
	switch {
	case errors.Is(err, ErrUserNotFound):
		if u, err = insertUser(ctx, tx, newUser{email: email, isOwner: true}); err != nil {
			return Owner{}, err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.UserCreate, TargetType: audit.TargetUser, TargetID: audit.ID(u.ID),
			Detail: map[string]any{"via": "invitation", "email": email, "is_owner": true}}); err != nil {
			return Owner{}, err
		}
		o := Owner{ID: u.ID, Email: email, Created: true}
		o.invitation, err = s.invite(ctx, tx, u.ID)
		return o, err
	case err != nil:
		return Owner{}, err
	}
	o := Owner{ID: u.ID, Email: u.Email}
	if !u.IsOwner {
		owner := true
		if _, err := updateUserFlags(ctx, tx, u.ID, UserPatch{IsOwner: &owner}); err != nil {
			return Owner{}, err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.UserUpdate, TargetType: audit.TargetUser, TargetID: audit.ID(u.ID),
			Detail: map[string]any{"is_owner": true, "via": "onboarding"}}); err != nil {
			return Owner{}, err
		}
	}
	if !hasPassword {
		o.invitation, err = s.invite(ctx, tx, u.ID)
	}
	return o, err
}

func (s *Service) invite(ctx context.Context, tx pgx.Tx, userID int64) (string, error) {
	if err := deleteUnusedInvitations(ctx, tx, userID); err != nil {
		return "", err
	}
	token, tokenHash := auth.NewOpaqueToken()
	return token, insertInvitation(ctx, tx, userID, tokenHash, s.opts.InvitationTTL)
}

// SendInvitation mails the owner's invitation, if PrepareOwner made one,
// in the background like verification mail: a mail server that is down
// fails nothing, and an admin onboarding again sends a fresh one.
func (s *Service) SendInvitation(ctx context.Context, o Owner, organization string) {
	if !o.Invited() {
		return
	}
	link := strings.TrimRight(s.opts.PublicURL, "/") + "/auth/invitations/accept?token=" + url.QueryEscape(o.invitation)
	body := "You have been invited to tenantbase as the owner of the organization " + organization + ".\n\n" +
		"Choose your password within " + s.opts.InvitationTTL.String() + " to accept the invitation:\n\n" +
		link + "\n\n" +
		"(The link carries your invitation token: POST {\"token\": ..., \"password\": ...} to\n" +
		strings.TrimRight(s.opts.PublicURL, "/") + "/auth/invitations/accept.)\n\n" +
		"If you did not expect this invitation, you can ignore this message.\n"
	ctx = context.WithoutCancel(ctx)
	s.sending.Add(1)
	go func() {
		defer s.sending.Done()
		if err := s.mailer.Send(ctx, o.Email, "You are invited to tenantbase", body); err != nil {
			logctx.From(ctx, s.opts.Log).Error("invitation mail not sent; onboard the organization's owner again for another", "error", err.Error())
		}
	}()
}

// AcceptInvitation spends an invitation token: the invited user gets
// password and is verified, then accepted runs in the same transaction
// (the job that carries the password into the owner's tenants), and a
// session starts as with a login.
func (s *Service) AcceptInvitation(ctx context.Context, token, password string, accepted func(tx pgx.Tx, userID int64) error) (auth.Tokens, error) {
	if token == "" {
		return auth.Tokens{}, apperr.Invalid("token", "is required")
	}
	if err := auth.ValidatePassword("password", password); err != nil {
		return auth.Tokens{}, err
	}
	hash, err := s.passwords.Hash(ctx, password)
	if err != nil {
		return auth.Tokens{}, fmt.Errorf("hash password: %w", err)
	}
	var u User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		userID, err := spendInvitation(ctx, tx, auth.HashToken(token))
		if err != nil {
			return err
		}
		if err := setPassword(ctx, tx, userID, hash); err != nil {
			return err
		}
		if u, err = markVerified(ctx, tx, userID); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.UserInvitationAccept, TargetType: audit.TargetUser,
			TargetID: audit.ID(userID), ActorID: userID}); err != nil {
			return err
		}
		return accepted(tx, userID)
	})
	if err != nil {
		return auth.Tokens{}, err
	}
	refresh, err := auth.IssueRefresh(ctx, s.db, u.ID, s.opts.RefreshTokenTTL)
	if err != nil {
		return auth.Tokens{}, err
	}
	return s.tokens(u, refresh)
}

// LockQuota locks user id's row until tx ends and returns how many
// organizations they may have: creations for one owner queue here, so
// that each counts the others' organizations.
func (s *Service) LockQuota(ctx context.Context, tx pgx.Tx, id int64) (int, error) {
	own, err := lockMaxOrganizations(ctx, tx, id)
	if err != nil {
		return 0, err
	}
	if own != nil {
		return *own, nil
	}
	return s.opts.DefaultMaxOrganizations, nil
}
