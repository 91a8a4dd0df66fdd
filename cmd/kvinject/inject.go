package main

import (
	"context"
	"fmt"
	"io"
)

func runInject(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "kvinject inject: not yet built")
	return 1
}
