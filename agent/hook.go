package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Hook calls: each attempt has hookTimeout, attempts are hookRetry apart.
const (
	hookAttempts = 3
	hookTimeout  = 5 * time.Second
	hookRetry    = time.Second
)

// hookClient never uses a proxy: the hook is on the pod's own loopback
// (config.CheckHook), and HTTP_PROXY in the agent's environment must not
// send the call elsewhere.
var hookClient = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: hookTimeout,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// callHook POSTs to the on-change hook after a refresh published a new
// snapshot, so an app that can reload learns of it. A 2xx answer is success;
// anything else is retried hookAttempts times in all, then logged: the files
// are already published, and a hook that fails never fails the sidecar.
func (a *agent) callHook(ctx context.Context, url string) {
	for attempt := 1; ; attempt++ {
		status, err := post(ctx, url)
		if err == nil && status/100 == 2 {
			a.log.Info("on-change hook", "url", url, "status", status, "attempt", attempt)
			return
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d", status)
		}
		if attempt == hookAttempts || ctx.Err() != nil {
			a.log.Error("on-change hook failed", "url", url, "attempts", attempt, "error", err.Error())
			return
		}
		a.log.Warn("on-change hook", "url", url, "attempt", attempt, "error", err.Error())
		if sleep(ctx, hookRetry) != nil {
			return
		}
	}
}

func post(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, http.NoBody)
	if err != nil {
		return 0, err
	}
	resp, err := hookClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
