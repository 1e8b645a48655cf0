package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// User is the resource the API serves.
type User struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

var (
	errNotFound = errors.New("user not found")
	errConflict = errors.New("email already in use")
)

// store is the in-memory user table, safe for concurrent use.
type store struct {
	mu     sync.RWMutex
	users  map[int64]User
	nextID int64
}

func newStore(seed []User) *store {
	s := &store{nextID: 1}
	s.reset(seed)
	return s
}

// reset replaces all users with seed. nextID only grows, so an id handed out
// before the reset is not handed out again.
func (s *store) reset(seed []User) {
	users := make(map[int64]User, len(seed))
	next := int64(1)
	for _, u := range seed {
		users[u.ID] = u
		next = max(next, u.ID+1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = users
	s.nextID = max(s.nextID, next)
}

func (s *store) list() []User {
	s.mu.RLock()
	out := make([]User, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, u)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b User) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (s *store) get(id int64) (User, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.users[id]
	if !ok {
		return User{}, errNotFound
	}
	return u, nil
}

// emailTaken reports whether another user than except has email; the caller
// holds the lock.
func (s *store) emailTaken(email string, except int64) bool {
	for _, u := range s.users {
		if u.ID != except && strings.EqualFold(u.Email, email) {
			return true
		}
	}
	return false
}

func (s *store) create(name, email string) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.emailTaken(email, 0) {
		return User{}, errConflict
	}
	u := User{ID: s.nextID, Name: name, Email: email}
	s.nextID++
	s.users[u.ID] = u
	return u, nil
}

func (s *store) update(id int64, name, email string) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[id]; !ok {
		return User{}, errNotFound
	}
	if s.emailTaken(email, id) {
		return User{}, errConflict
	}
	u := User{ID: id, Name: name, Email: email}
	s.users[id] = u
	return u, nil
}

func (s *store) delete(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[id]; !ok {
		return errNotFound
	}
	delete(s.users, id)
	return nil
}

const (
	// maxSeedID keeps ids exact in JavaScript clients (2^53-1).
	maxSeedID   = 1<<53 - 1
	maxNameLen  = 100
	maxEmailLen = 254
)

// validate trims name and email and returns them with a map of field
// problems (empty when valid).
func validate(name, email string) (string, string, map[string]string) {
	name, email = strings.TrimSpace(name), strings.TrimSpace(email)
	problems := map[string]string{}
	switch {
	case name == "":
		problems["name"] = "is required"
	case utf8.RuneCountInString(name) > maxNameLen:
		problems["name"] = fmt.Sprintf("must be at most %d characters", maxNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		problems["name"] = "must not contain control characters"
	}
	switch {
	case email == "":
		problems["email"] = "is required"
	case len(email) > maxEmailLen:
		problems["email"] = fmt.Sprintf("must be at most %d characters", maxEmailLen)
	default:
		addr, err := mail.ParseAddress(email)
		if err != nil || addr.Address != email || addr.Name != "" {
			problems["email"] = "must be a plain address like name@example.com"
		}
	}
	return name, email, problems
}

// seedFile is the format of private/config/users.json.
type seedFile struct {
	Users []User `json:"users"`
}

// loadSeed reads and validates the seed file: unique positive ids, valid
// names and unique emails.
func loadSeed(path string) ([]User, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seed: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f seedFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse seed %s: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse seed %s: data after the JSON object", path)
	}
	ids := map[int64]bool{}
	emails := map[string]bool{}
	out := make([]User, 0, len(f.Users))
	for i, u := range f.Users {
		if u.ID <= 0 || u.ID > maxSeedID {
			return nil, fmt.Errorf("seed %s: users[%d]: id must be an integer from 1 to %d", path, i, maxSeedID)
		}
		if ids[u.ID] {
			return nil, fmt.Errorf("seed %s: users[%d]: duplicate id %d", path, i, u.ID)
		}
		name, email, problems := validate(u.Name, u.Email)
		for _, field := range []string{"name", "email"} {
			if p, bad := problems[field]; bad {
				return nil, fmt.Errorf("seed %s: users[%d]: %s %s", path, i, field, p)
			}
		}
		key := strings.ToLower(email)
		if emails[key] {
			return nil, fmt.Errorf("seed %s: users[%d]: duplicate email %s", path, i, email)
		}
		ids[u.ID], emails[key] = true, true
		out = append(out, User{ID: u.ID, Name: name, Email: email})
	}
	return out, nil
}
