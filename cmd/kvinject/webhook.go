package main

import (
	"context"
	"fmt"
	"os"
)

func runWebhook(ctx context.Context, args []string) int {
	fmt.Fprintln(os.Stderr, "kvinject webhook: not yet built")
	return 1
}
