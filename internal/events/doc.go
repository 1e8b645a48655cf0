// Package events defines the typed events that flow into the supervisor loop.
//
// Event sources (signal handler, admin socket, health probers, process exit
// waiters, timers, builder, watcher) only construct and send these values; they
// never touch worker state. The supervisor goroutine is the only consumer.
// Events are plain values and safe to send across goroutines; reply channels
// inside them are written once by the supervisor.
package events
