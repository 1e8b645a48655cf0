package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker/tqworkertest"
)

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r result) errorBody(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("error response without message: %s", r.body)
	}
	return e
}

func call(t *testing.T, w *tqworkertest.Worker, method, path, contentType, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode != http.StatusNoContent && method != http.MethodHead {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q, want application/json (body %s)", method, path, ct, b)
		}
	}
	return res
}

const jsonCT = "application/json"

func expect(t *testing.T, r result, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

func listUsers(t *testing.T, w *tqworkertest.Worker) []User {
	t.Helper()
	r := call(t, w, http.MethodGet, "/api/users", "", "")
	expect(t, r, http.StatusOK)
	var body struct{ Users []User }
	r.decode(t, &body)
	return body.Users
}

func workerDir(t *testing.T) string {
	return filepath.Join(tqworkertest.ModuleRoot(t), "workers", "api_users")
}

func TestAPIUsers(t *testing.T) {
	bin := tqworkertest.Build(t, "./workers/api_users/src")
	t.Run("crud", func(t *testing.T) { testCRUD(t, bin) })
	t.Run("errors", func(t *testing.T) { testErrors(t, bin) })
	t.Run("reload seed on SIGUSR1", func(t *testing.T) { testReload(t, bin) })
}

func testCRUD(t *testing.T, bin string) {
	w := tqworkertest.Start(t, bin, tqworkertest.Config{Base: workerDir(t), Name: "api_users", Route: "/api/users"})

	seed := listUsers(t, w)
	if len(seed) != 3 || seed[0].ID != 1 || seed[0].Name != "Ada Lovelace" || seed[2].ID != 3 {
		t.Fatalf("seeded list = %+v", seed)
	}

	r := call(t, w, http.MethodPost, "/api/users", jsonCT, `{"name":"  Katherine Johnson ","email":"katherine@example.com"}`)
	expect(t, r, http.StatusCreated)
	var created User
	r.decode(t, &created)
	if created.ID != 4 || created.Name != "Katherine Johnson" || created.Email != "katherine@example.com" {
		t.Fatalf("created %+v", created)
	}
	if loc := r.header.Get("Location"); loc != "/api/users/4" {
		t.Errorf("Location = %q", loc)
	}

	r = call(t, w, http.MethodGet, "/api/users/4", "", "")
	expect(t, r, http.StatusOK)
	var got User
	r.decode(t, &got)
	if got != created {
		t.Fatalf("GET after create = %+v, want %+v", got, created)
	}
	if r := call(t, w, http.MethodHead, "/api/users/4", "", ""); r.status != http.StatusOK || len(r.body) != 0 {
		t.Errorf("HEAD = %d with %d bytes", r.status, len(r.body))
	}

	// PUT may echo the id back; it replaces name and email.
	r = call(t, w, http.MethodPut, "/api/users/4", jsonCT, `{"id":4,"name":"K. Johnson","email":"kj@example.com"}`)
	expect(t, r, http.StatusOK)
	r.decode(t, &got)
	if got != (User{ID: 4, Name: "K. Johnson", Email: "kj@example.com"}) {
		t.Fatalf("PUT result %+v", got)
	}
	r = call(t, w, http.MethodGet, "/api/users/4", "", "")
	r.decode(t, &got)
	if got.Email != "kj@example.com" {
		t.Fatalf("GET after PUT = %+v", got)
	}

	r = call(t, w, http.MethodDelete, "/api/users/4", "", "")
	expect(t, r, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("204 with body %q", r.body)
	}
	expect(t, call(t, w, http.MethodGet, "/api/users/4", "", ""), http.StatusNotFound)
	expect(t, call(t, w, http.MethodDelete, "/api/users/4", "", ""), http.StatusNotFound)
	if n := len(listUsers(t, w)); n != 3 {
		t.Fatalf("%d users after delete, want 3", n)
	}

	// Ids are not reused after a delete.
	r = call(t, w, http.MethodPost, "/api/users", jsonCT, `{"name":"Next","email":"next@example.com"}`)
	expect(t, r, http.StatusCreated)
	r.decode(t, &got)
	if got.ID != 5 {
		t.Fatalf("id after delete = %d, want 5", got.ID)
	}
}

func testErrors(t *testing.T, bin string) {
	w := tqworkertest.Start(t, bin, tqworkertest.Config{Base: workerDir(t), Name: "api_users", Route: "/api/users"})

	cases := []struct {
		name, method, path, ct, body string
		status                       int
		field                        string // expected key in "fields"
		allow                        string
	}{
		{"missing name", "POST", "/api/users", jsonCT, `{"email":"x@example.com"}`, 400, "name", ""},
		{"blank name", "POST", "/api/users", jsonCT, `{"name":"   ","email":"x@example.com"}`, 400, "name", ""},
		{"long name", "POST", "/api/users", jsonCT, `{"name":"` + strings.Repeat("n", 101) + `","email":"x@example.com"}`, 400, "name", ""},
		{"bad email", "POST", "/api/users", jsonCT, `{"name":"X","email":"not-an-email"}`, 400, "email", ""},
		{"display-name email", "POST", "/api/users", jsonCT, `{"name":"X","email":"X <x@example.com>"}`, 400, "email", ""},
		{"wrong type", "POST", "/api/users", jsonCT, `{"name":42,"email":"x@example.com"}`, 400, "name", ""},
		{"client id", "POST", "/api/users", jsonCT, `{"id":9,"name":"X","email":"x@example.com"}`, 400, "id", ""},
		{"unknown field", "POST", "/api/users", jsonCT, `{"name":"X","email":"x@example.com","admin":true}`, 400, "", ""},
		{"malformed", "POST", "/api/users", jsonCT, `{"name":`, 400, "", ""},
		{"empty body", "POST", "/api/users", jsonCT, ``, 400, "", ""},
		{"two objects", "POST", "/api/users", jsonCT, `{"name":"X","email":"x@example.com"}{}`, 400, "", ""},
		{"form body", "POST", "/api/users", "application/x-www-form-urlencoded", `name=X`, 415, "", ""},
		{"too large", "POST", "/api/users", jsonCT, `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "", ""},
		{"duplicate email", "POST", "/api/users", jsonCT, `{"name":"Ada","email":"ADA@example.com"}`, 409, "email", ""},
		{"put id mismatch", "PUT", "/api/users/1", jsonCT, `{"id":2,"name":"X","email":"x@example.com"}`, 400, "id", ""},
		{"put missing", "PUT", "/api/users/999", jsonCT, `{"name":"X","email":"x@example.com"}`, 404, "", ""},
		{"put invalid", "PUT", "/api/users/1", jsonCT, `{"name":"","email":"x@example.com"}`, 400, "name", ""},
		{"put taken email", "PUT", "/api/users/1", jsonCT, `{"name":"Ada","email":"alan@example.com"}`, 409, "email", ""},
		{"non-numeric id", "GET", "/api/users/abc", "", "", 404, "", ""},
		{"zero id", "GET", "/api/users/0", "", "", 404, "", ""},
		{"padded id", "GET", "/api/users/01", "", "", 404, "", ""},
		{"unknown id", "GET", "/api/users/424242", "", "", 404, "", ""},
		{"sub-resource", "GET", "/api/users/1/posts", "", "", 404, "", ""},
		{"collection PATCH", "PATCH", "/api/users", "", "", 405, "", "GET, HEAD, POST"},
		{"collection DELETE", "DELETE", "/api/users", "", "", 405, "", "GET, HEAD, POST"},
		{"item POST", "POST", "/api/users/1", jsonCT, `{}`, 405, "", "GET, HEAD, PUT, DELETE"},
		{"item PATCH", "PATCH", "/api/users/1", jsonCT, `{}`, 405, "", "GET, HEAD, PUT, DELETE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := call(t, w, c.method, c.path, c.ct, c.body)
			expect(t, r, c.status)
			e := r.errorBody(t)
			if c.field != "" && e.Fields[c.field] == "" {
				t.Errorf("no problem reported for field %q: %s", c.field, r.body)
			}
			if c.allow != "" && r.header.Get("Allow") != c.allow {
				t.Errorf("Allow = %q, want %q", r.header.Get("Allow"), c.allow)
			}
		})
	}
	// None of the rejected writes changed anything.
	users := listUsers(t, w)
	if len(users) != 3 || users[0].Name != "Ada Lovelace" || users[0].Email != "ada@example.com" {
		t.Fatalf("store changed by rejected requests: %+v", users)
	}
}

func testReload(t *testing.T, bin string) {
	dir := tqworkertest.CopyDir(t, workerDir(t))
	w := tqworkertest.Start(t, bin, tqworkertest.Config{Base: dir})
	seedPath := filepath.Join(dir, "private", "config", "users.json")

	r := call(t, w, http.MethodPost, "/api/users", jsonCT, `{"name":"Temp","email":"temp@example.com"}`)
	expect(t, r, http.StatusCreated)

	seed := `{"users":[{"id":10,"name":"Edsger Dijkstra","email":"edsger@example.com"}]}`
	if err := os.WriteFile(seedPath, []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	tqworkertest.Eventually(t, 10*time.Second, "the new seed to be served", func() bool {
		users := listUsers(t, w)
		return len(users) == 1 && users[0].Name == "Edsger Dijkstra"
	})

	// An invalid seed is refused and the data kept.
	if err := os.WriteFile(seedPath, []byte(`{"users":[{"id":1,"name":"","email":"x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	tqworkertest.Eventually(t, 10*time.Second, "the refused reload to be logged", func() bool {
		return strings.Contains(w.Output(), "keeping the current data")
	})
	users := listUsers(t, w)
	if len(users) != 1 || users[0].ID != 10 {
		t.Fatalf("after invalid seed: %+v", users)
	}

	// New ids continue after the highest one seen.
	r = call(t, w, http.MethodPost, "/api/users", jsonCT, `{"name":"After","email":"after@example.com"}`)
	expect(t, r, http.StatusCreated)
	var u User
	r.decode(t, &u)
	if u.ID != 11 {
		t.Fatalf("id after reload = %d, want 11", u.ID)
	}
	if !strings.Contains(w.Output(), "reloaded 1 user(s)") {
		t.Errorf("reload not logged:\n%s", w.Output())
	}
}

// The seed loader rejects what would break the store.
func TestLoadSeedRejects(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"not json":        `{`,
		"unknown field":   `{"users":[],"extra":1}`,
		"zero id":         `{"users":[{"id":0,"name":"A","email":"a@example.com"}]}`,
		"huge id":         `{"users":[{"id":9223372036854775807,"name":"A","email":"a@example.com"}]}`,
		"duplicate id":    `{"users":[{"id":1,"name":"A","email":"a@example.com"},{"id":1,"name":"B","email":"b@example.com"}]}`,
		"duplicate email": `{"users":[{"id":1,"name":"A","email":"a@example.com"},{"id":2,"name":"B","email":"A@example.com"}]}`,
		"bad email":       `{"users":[{"id":1,"name":"A","email":"nope"}]}`,
		"trailing data":   `{"users":[]} []`,
	}
	for name, content := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if users, err := loadSeed(p); err == nil {
			t.Errorf("%s: loadSeed accepted it: %+v", name, users)
		}
	}
	if _, err := loadSeed(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
	users, err := loadSeed(filepath.Join(workerDir(t), "private", "config", "users.json"))
	if err != nil || len(users) != 3 {
		t.Fatalf("shipped seed: %d users, %v", len(users), err)
	}
}
