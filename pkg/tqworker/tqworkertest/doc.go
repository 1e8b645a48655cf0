// Package tqworkertest runs worker binaries in tests the way tqserver runs
// them: Build compiles a worker's main package, Start launches it on a free
// 127.0.0.1 port with the tqserver environment (PORT, TQ_WORKER_*, TQ_MODE)
// and waits until GET /health answers 200. Every process it starts is killed
// by PID in t.Cleanup if the test has not stopped it.
//
// Concurrency: a Worker's methods are safe to call from several goroutines;
// Build, Start, Eventually and CopyDir call t.Fatal and so belong on the test
// goroutine.
package tqworkertest
