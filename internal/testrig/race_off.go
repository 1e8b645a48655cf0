//go:build !race

package testrig

// Race is true when the running binary was built with -race.
const Race = false
