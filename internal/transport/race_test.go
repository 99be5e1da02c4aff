//go:build race

package transport

// raceFactor loosens timing bounds under the race detector, which slows
// json.Marshal several times over.
const raceFactor = 5
