package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"strconv"
)

const (
	route        = "/api/users"
	maxBodyBytes = 64 << 10
)

type api struct{ store *store }

func newAPI(s *store) *api { return &api{store: s} }

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+route, a.list)
	mux.HandleFunc("POST "+route, a.create)
	mux.HandleFunc(route, methodNotAllowed("GET, HEAD, POST"))
	mux.HandleFunc("GET "+route+"/{id}", a.get)
	mux.HandleFunc("PUT "+route+"/{id}", a.update)
	mux.HandleFunc("DELETE "+route+"/{id}", a.delete)
	mux.HandleFunc(route+"/{id}", methodNotAllowed("GET, HEAD, PUT, DELETE"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such resource: "+r.URL.Path, nil)
	})
	return mux
}

// errorBody is every error response.
type errorBody struct {
	Error  string            `json:"error"`
	Fields map[string]string `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		log.Printf("api_users: encode response: %v", err)
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string, fields map[string]string) {
	writeJSON(w, status, errorBody{Error: msg, Fields: fields})
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allow), nil)
	}
}

// pathID parses {id}; only canonical positive decimal integers name a user,
// so "07" and "+7" do not alias "7".
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != raw {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user with id %q", raw), nil)
		return 0, false
	}
	return id, true
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]User{"users": a.store.list()})
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	u, err := a.store.get(id)
	if err != nil {
		writeStoreError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// userInput is the body of POST and PUT. ID is accepted so a client can PUT
// back what it got, but must then match the path.
type userInput struct {
	ID    *int64 `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// readInput decodes and validates the body, writing the error response
// itself when it returns false.
func readInput(w http.ResponseWriter, r *http.Request) (userInput, bool) {
	var in userInput
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json", nil)
			return in, false
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit), nil)
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, "request body is empty; send a JSON object", nil)
		case errors.As(err, &syntaxErr):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("malformed JSON at byte %d", syntaxErr.Offset), nil)
		case errors.As(err, &typeErr) && typeErr.Field != "":
			writeError(w, http.StatusBadRequest, "invalid field type", map[string]string{typeErr.Field: "must be a " + typeErr.Type.String()})
		default:
			writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error(), nil)
		}
		return in, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "request body must be a single JSON object", nil)
		return in, false
	}
	var problems map[string]string
	in.Name, in.Email, problems = validate(in.Name, in.Email)
	if len(problems) > 0 {
		writeError(w, http.StatusBadRequest, "validation failed", problems)
		return in, false
	}
	return in, true
}

func writeStoreError(w http.ResponseWriter, id int64, err error) {
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user with id %d", id), nil)
	case errors.Is(err, errConflict):
		writeError(w, http.StatusConflict, "email already in use", map[string]string{"email": "is already in use"})
	default:
		log.Printf("api_users: %v", err)
		writeError(w, http.StatusInternalServerError, "internal error", nil)
	}
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	if in.ID != nil {
		writeError(w, http.StatusBadRequest, "validation failed", map[string]string{"id": "is assigned by the server"})
		return
	}
	u, err := a.store.create(in.Name, in.Email)
	if err != nil {
		writeStoreError(w, 0, err)
		return
	}
	w.Header().Set("Location", route+"/"+strconv.FormatInt(u.ID, 10))
	writeJSON(w, http.StatusCreated, u)
}

func (a *api) update(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	if in.ID != nil && *in.ID != id {
		writeError(w, http.StatusBadRequest, "validation failed", map[string]string{"id": "must match the id in the path"})
		return
	}
	u, err := a.store.update(id, in.Name, in.Email)
	if err != nil {
		writeStoreError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := a.store.delete(id); err != nil {
		writeStoreError(w, id, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
