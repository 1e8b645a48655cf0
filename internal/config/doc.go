// Package config owns tqserver's configuration: it reads config/server.yaml and
// config/deployment.yaml under an app root, expands ${VAR} and ${VAR:-default}
// from the process environment, applies defaults, validates, and reports every
// problem as one line "file:line: message".
//
// Load always builds a whole new *Config and returns it only when it is valid,
// so a reload can swap configs atomically and keep the old one on error.
//
// Concurrency: a *Config is never modified after Load or Default returns it;
// any number of goroutines may read it. Its methods (ForWorker, the duration
// helpers) return copies and do not mutate the receiver. Callers must not
// modify a Config they share.
package config
