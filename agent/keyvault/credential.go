package keyvault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// failureMemory is how long a permanent sign-in failure is answered from
// memory. Every vault request that is waiting for a token would otherwise
// ask Entra ID again, one after the other, to hear the same AADSTS error.
const failureMemory = 5 * time.Second

// rememberingCredential asks Entra ID one request at a time (the callers
// after the first find the token in MSAL's cache), and answers with the last
// permanent failure (Entra ID answered, and not with 408, 429 or 5xx) for
// failureMemory. Transient failures pass through, to be retried.
type rememberingCredential struct {
	cred azcore.TokenCredential

	mu     sync.Mutex // held across the sign-in
	failed map[string]failedSignIn
}

type failedSignIn struct {
	resp   *http.Response
	body   []byte
	expiry time.Time
}

func (r *rememberingCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	key := fmt.Sprintf("%q %q %q %t", opts.Scopes, opts.TenantID, opts.Claims, opts.EnableCAE)
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.failed[key]; ok && time.Now().Before(f.expiry) {
		// A fresh error each time: reading an SDK response body is not safe
		// from several goroutines.
		resp := *f.resp
		resp.Header = f.resp.Header.Clone()
		resp.Body = io.NopCloser(bytes.NewReader(f.body))
		return azcore.AccessToken{}, &azidentity.AuthenticationFailedError{RawResponse: &resp}
	}
	delete(r.failed, key)
	rec := &netRecord{}
	tok, err := r.cred.GetToken(context.WithValue(ctx, netRecordKey{}, rec), opts)
	if nf := rec.get(); err != nil && nf != nil {
		err = &signInError{err: err, net: nf}
	}
	var authErr *azidentity.AuthenticationFailedError
	if errors.As(err, &authErr) && authErr.RawResponse != nil && !retryableStatus(authErr.RawResponse.StatusCode) {
		if body, perr := runtime.Payload(authErr.RawResponse); perr == nil {
			if r.failed == nil {
				r.failed = map[string]failedSignIn{}
			}
			r.failed[key] = failedSignIn{resp: authErr.RawResponse, body: body, expiry: time.Now().Add(failureMemory)}
		}
	}
	return tok, err
}
