// Command index is the tqserver worker for the route "/": a welcome page
// rendered from private/views/index.html (with the partials in
// private/templates/), a 404 page for every other path, and templates that
// reload on SIGUSR1 without a restart.
package main

import (
	"log"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker"
)

func main() {
	started := time.Now()
	tpl, err := tqworker.LoadTemplates("private/views/*.html", "private/templates/*.html")
	if err != nil {
		log.Fatalf("index: %v", err)
	}
	s := newSite(tpl, started)
	tqworker.OnReload(s.reload)
	if err := tqworker.Run(s.routes()); err != nil {
		log.Fatalf("index: %v", err)
	}
}
