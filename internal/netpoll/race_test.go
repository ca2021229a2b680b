//go:build race

package netpoll_test

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts are not what a normal build does.
const raceEnabled = true
