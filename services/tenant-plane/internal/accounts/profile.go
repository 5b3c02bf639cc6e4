package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"tenantbase/libs/apperr"
	"tenantbase/libs/tenantdb"
)

// Optional is a JSON field that may be absent (leave as is), null (clear)
// or a string (set).
type Optional struct {
	Set   bool
	Value *string
}

// UnmarshalJSON is only called for fields present in the body.
func (o *Optional) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(b, []byte("null")) {
		o.Value = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string", Type: reflect.TypeFor[string]()}
	}
	o.Value = &s
	return nil
}

// ProfilePatch changes the profile fields that are Set.
type ProfilePatch struct {
	DisplayName Optional `json:"display_name"`
	Bio         Optional `json:"bio"`
	AvatarURL   Optional `json:"avatar_url"`
}

// Limits of the profile fields, in characters (the columns' sizes).
const (
	MaxDisplayName = 100
	MaxBio         = 1000
	MaxAvatarURL   = 2048
)

// UpdateProfile applies patch to user id's profile. Blank values clear a field.
func (s *Service) UpdateProfile(ctx context.Context, db DB, id int64, patch ProfilePatch) (Profile, error) {
	if !patch.DisplayName.Set && !patch.Bio.Set && !patch.AvatarURL.Set {
		return Profile{}, apperr.Invalid("body", "set at least one of display_name, bio, avatar_url")
	}
	name, nameErr := cleanText("display_name", patch.DisplayName.Value, MaxDisplayName, false)
	bio, bioErr := cleanText("bio", patch.Bio.Value, MaxBio, true)
	avatar, avatarErr := cleanURL("avatar_url", patch.AvatarURL.Value)
	if err := apperr.Join(nameErr, bioErr, avatarErr); err != nil {
		return Profile{}, err
	}
	a, err := tenantdb.UpdateProfile(ctx, db, id, tenantdb.ProfileChange{
		SetDisplayName: patch.DisplayName.Set, DisplayName: name,
		SetBio: patch.Bio.Set, Bio: bio,
		SetAvatarURL: patch.AvatarURL.Set, AvatarURL: avatar,
	})
	if err != nil {
		return Profile{}, err
	}
	return ProfileOf(a), nil
}

// cleanText trims v and checks its length and characters; blank is nil.
// Newlines and tabs are allowed only in multiline fields.
func cleanText(field string, v *string, maxChars int, multiline bool) (*string, error) {
	if v == nil {
		return nil, nil
	}
	s := strings.TrimSpace(*v)
	if s == "" {
		return nil, nil
	}
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxChars {
		return nil, apperr.Invalid(field, "must be valid text of at most "+strconv.Itoa(maxChars)+" characters")
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t' || r == '\r')) {
			return nil, apperr.Invalid(field, "must not contain control characters")
		}
	}
	return &s, nil
}

// cleanURL accepts an absolute http or https URL; blank is nil.
func cleanURL(field string, v *string) (*string, error) {
	if v == nil {
		return nil, nil
	}
	s := strings.TrimSpace(*v)
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || len(s) > MaxAvatarURL || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		strings.ContainsFunc(s, unicode.IsSpace) {
		return nil, apperr.Invalid(field, "must be an absolute http or https URL of at most 2048 characters")
	}
	return &s, nil
}
