// Command api_users is the tqserver worker for the route /api/users: a small
// JSON API over an in-memory user store.
//
//	GET    /api/users        list users, ordered by id
//	POST   /api/users        create from {"name": ..., "email": ...}; 201 + Location
//	GET    /api/users/{id}   one user
//	PUT    /api/users/{id}   replace name and email
//	DELETE /api/users/{id}   remove; 204
//
// The store is seeded from private/config/users.json at start. SIGUSR1 (sent
// by tqserver when private/ changed) resets the store to that file again; an
// invalid file is logged and the current data kept. Ids are never reused
// within one process, not even across reloads.
package main

import (
	"log"

	"github.com/mevdschee/tqserver/pkg/tqworker"
)

func main() {
	seedPath, err := tqworker.PathErr("private", "config", "users.json")
	if err != nil {
		log.Fatalf("api_users: %v", err)
	}
	seed, err := loadSeed(seedPath)
	if err != nil {
		log.Fatalf("api_users: %v", err)
	}
	st := newStore(seed)
	log.Printf("api_users: loaded %d user(s) from %s", len(seed), seedPath)

	tqworker.OnReload(func() {
		users, err := loadSeed(seedPath)
		if err != nil {
			log.Printf("api_users: reload: %v (keeping the current data)", err)
			return
		}
		st.reset(users)
		log.Printf("api_users: reloaded %d user(s) from %s", len(users), seedPath)
	})
	if err := tqworker.Run(newAPI(st).routes()); err != nil {
		log.Fatalf("api_users: %v", err)
	}
}
