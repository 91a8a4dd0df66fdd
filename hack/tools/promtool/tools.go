//go:build tools

// Package tools pins promtool, built by hack/tools.sh from this module.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
