package tqworker

import (
	"log"
	"sync"
)

var reloadHooks struct {
	mu    sync.Mutex
	hooks []func()
}

// reloadRun serializes hook runs, so hooks never overlap even if several
// callers trigger a reload.
var reloadRun sync.Mutex

// OnReload registers fn to run when the worker receives SIGUSR1, which
// tqserver sends when only files under public/ or private/ changed. Hooks
// run one at a time in registration order; a hook that panics is logged and
// the remaining hooks still run. A nil fn is ignored.
func OnReload(fn func()) {
	if fn == nil {
		return
	}
	reloadHooks.mu.Lock()
	reloadHooks.hooks = append(reloadHooks.hooks, fn)
	reloadHooks.mu.Unlock()
}

// runReloadHooks runs the hooks registered so far and returns how many ran.
func runReloadHooks(logger *log.Logger) int {
	reloadRun.Lock()
	defer reloadRun.Unlock()
	reloadHooks.mu.Lock()
	hooks := append([]func(){}, reloadHooks.hooks...)
	reloadHooks.mu.Unlock()
	for i, fn := range hooks {
		runHook(logger, i, fn)
	}
	return len(hooks)
}

func runHook(logger *log.Logger, i int, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			logger.Printf("tqworker: reload hook %d panicked: %v", i, r)
		}
	}()
	fn()
}
