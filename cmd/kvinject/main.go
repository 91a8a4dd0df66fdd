// Command kvinject is the single binary of kvinject: the admission webhook, the
// in-pod agent and the offline injector.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kvinject webhook|agent|inject|version")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version":
		fmt.Println("kvinject dev")
	default:
		fmt.Fprintf(os.Stderr, "kvinject %s: not yet built\n", os.Args[1])
		os.Exit(1)
	}
}
