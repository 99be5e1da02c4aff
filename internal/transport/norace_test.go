//go:build !race

package transport

// raceFactor loosens timing bounds under the race detector.
const raceFactor = 1
