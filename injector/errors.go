package injector

import (
	"fmt"
	"strings"
)

// Problem is one reason a pod cannot be injected.
type Problem struct {
	// Field is where to fix it: an annotation key such as kvinject.io/refresh,
	// "kvinject.io/objects[2]", or a pod field such as spec.volumes.
	Field string
	// Message says what is wrong and how to fix it. It never holds a secret value.
	Message string
}

func (p Problem) String() string { return p.Field + ": " + p.Message }

// InvalidError lists every problem found in one pod, so a user fixes them all
// in one round instead of one per admission attempt.
type InvalidError struct {
	Problems []Problem
}

func (e *InvalidError) Error() string {
	if len(e.Problems) == 1 {
		return "kvinject: " + e.Problems[0].String()
	}
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return fmt.Sprintf("kvinject: %d problems: %s", len(e.Problems), strings.Join(parts, "; "))
}

// problems collects Problems while parsing.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &InvalidError{Problems: ps}
}
