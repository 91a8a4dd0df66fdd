package podrunner

import "time"

// SetRefreshAfter replaces when tokens are refreshed, for a test that cannot
// wait 80% of the API server's minimum token lifetime (10 minutes).
func SetRefreshAfter(f func(ttl time.Duration) time.Duration) (restore func()) {
	old := refreshAfter
	refreshAfter = f
	return func() { refreshAfter = old }
}
