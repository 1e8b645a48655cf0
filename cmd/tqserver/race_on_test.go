//go:build race

package main

// raceEnabled builds the server under test with -race too, so a data race
// in the supervisor or the proxy fails the end-to-end tests.
const raceEnabled = true
