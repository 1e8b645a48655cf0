//go:build race

package testrig

// Race is true when the running binary was built with -race: the rig then
// builds the binaries under test with -race too, so a data race in them
// fails the test as well.
const Race = true
