// Package testrig is the one test rig of tqserver: what the end-to-end
// tests (cmd/tqserver), the in-process supervisor tests, the benchmark
// (cmd/tqbench) and the public worker test kit (pkg/tqworker/tqworkertest)
// share. It builds binaries from source with go build, installs worker
// binaries the way a deploy does (temporary file, rename), starts and stops
// the real tqserver binary on an app root and collects its output, reads
// the status over the admin socket, runs the CLI, polls with a deadline and
// generates bounded HTTP load.
//
// It imports nothing of tqserver itself, so that worker authors' tests that
// use tqworkertest do not compile the server; callers decode the status and
// history into the server's own types.
//
// Concurrency: Buffer, Server, Builds and Load are safe to use from several
// goroutines. WaitFor and the functions taking a testing.TB call t.Fatal and
// belong on the test goroutine.
package testrig
