//go:build race

package tqworkertest

// raceEnabled builds workers with -race when the test itself runs with
// -race, so data races inside the worker process fail its exit status too.
const raceEnabled = true
