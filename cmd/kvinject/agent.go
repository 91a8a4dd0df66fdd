package main

import (
	"context"
	"fmt"
	"os"
)

func runAgent(ctx context.Context, args []string) int {
	fmt.Fprintln(os.Stderr, "kvinject agent: not yet built")
	return 1
}
