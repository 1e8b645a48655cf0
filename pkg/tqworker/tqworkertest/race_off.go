//go:build !race

package tqworkertest

const raceEnabled = false
