// Command testsum reads `go test -json` on stdin and prints what a reader
// of a CI log needs: one line per package, every skipped test with its
// reason, and the whole output of every failed test. It exits 1 if
// anything failed.
//
//	go test -json ./... | go run ./scripts/testsum
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	out := map[string][]string{} // package/test → output lines
	var skips, fails []string
	failed := false
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		var e event
		if json.Unmarshal(in.Bytes(), &e) != nil {
			fmt.Println(in.Text()) // not JSON: a build error, say
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			out[key] = append(out[key], e.Output)
		case "skip":
			if e.Test != "" {
				skips = append(skips, fmt.Sprintf("SKIP %s %s: %s", e.Package, e.Test, reason(out[key])))
			}
			delete(out, key)
		case "pass":
			delete(out, key)
			if e.Test == "" {
				fmt.Printf("ok   %s %.1fs\n", e.Package, e.Elapsed)
			}
		case "fail":
			failed = true
			if e.Test == "" {
				fmt.Printf("FAIL %s %.1fs\n", e.Package, e.Elapsed)
				if len(out[key]) > 0 { // a panic or build failure outside any test
					fails = append(fails, "=== "+e.Package+"\n"+strings.Join(out[key], ""))
				}
			} else {
				fails = append(fails, "=== "+e.Package+" "+e.Test+"\n"+strings.Join(out[key], ""))
			}
			delete(out, key)
		}
	}
	fmt.Printf("\n%d tests skipped\n", len(skips))
	for _, s := range skips {
		fmt.Println(s)
	}
	if len(fails) > 0 {
		fmt.Printf("\n%d failures:\n", len(fails))
		for _, f := range fails {
			fmt.Print(f)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// reason is the message a skipped test logged (its last non-status line).
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "=== ") && !strings.HasPrefix(l, "--- ") {
			return l
		}
	}
	return "(no reason given)"
}
