package keyvault

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Failure is what the agent needs to know about a failed Get: whether to try
// again, when, and what to tell the user. None of its fields holds a secret:
// they come from error responses and transport errors.
type Failure struct {
	// SignIn is set when Entra ID refused the token, not the vault the object.
	SignIn bool
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// Code is the most specific error code: Key Vault's inner code (e.g.
	// ForbiddenByRbac) or code (e.g. SecretNotFound), or AADSTS70021.
	Code string
	// Message is the server's own explanation, or the transport error.
	Message string
	// Retryable is true for network errors, 408, 429 and 5xx, and for sign-in
	// failures that carry no response (the token file is not there yet, the
	// authority is unreachable).
	Retryable bool
	// RetryAfter is the server's Retry-After, if any.
	RetryAfter time.Duration
	// Class is one of the Class* constants for a failure without a
	// response, or empty; Host is the host it concerns.
	Class, Host string
	// Tenant is the tenant a vault's challenge named (ClassTenantMismatch).
	Tenant string
}

var aadstsRE = regexp.MustCompile(`AADSTS\d+`)

// otherTenantRE matches azidentity's refusal to sign in to the tenant a
// vault's challenge named, when that is not the credential's tenant: the
// vault belongs to another tenant, or the tenant id is wrong. azidentity
// gives it as text only.
var otherTenantRE = regexp.MustCompile(`isn't configured to acquire tokens for tenant "([^"]+)"`)

// maxMessage keeps server messages short enough for a termination message.
const maxMessage = 300

// Classify explains err from Get.
func Classify(err error) Failure {
	var (
		authErr *azidentity.AuthenticationFailedError
		respErr *azcore.ResponseError
	)
	var nf *NetFailure
	// Not an AuthenticationFailedError: azidentity refuses before asking.
	if m := otherTenantRE.FindStringSubmatch(err.Error()); m != nil {
		return Failure{SignIn: true, Class: ClassTenantMismatch, Tenant: m[1],
			Message: "the vault's challenge names tenant " + m[1] + ", not the identity's"}
	}
	switch {
	case errors.As(err, &authErr):
		f := Failure{SignIn: true}
		if authErr.RawResponse == nil {
			f.Message = oneLine(authErr.Error())
			f.Retryable = true
			if errors.As(err, &nf) {
				f.Class, f.Host, f.Retryable, f.Message = nf.Class, nf.Host, nf.Retryable, oneLine(nf.Detail)
			}
			return f
		}
		f.Status = authErr.RawResponse.StatusCode
		f.Retryable = retryableStatus(f.Status)
		f.RetryAfter = retryAfter(authErr.RawResponse)
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if b, err := runtime.Payload(authErr.RawResponse); err == nil {
			_ = json.Unmarshal(b, &body)
		}
		f.Code = aadstsRE.FindString(body.Description)
		if f.Code == "" {
			f.Code = body.Error
		}
		f.Message = oneLine(strings.TrimPrefix(body.Description, f.Code+": "))
		return f
	case errors.As(err, &respErr):
		f := Failure{Status: respErr.StatusCode, Code: respErr.ErrorCode}
		f.Retryable = retryableStatus(f.Status)
		if respErr.RawResponse != nil {
			f.RetryAfter = retryAfter(respErr.RawResponse)
			var body struct {
				Error struct {
					Code       string `json:"code"`
					Message    string `json:"message"`
					InnerError *struct {
						Code string `json:"code"`
					} `json:"innererror"`
				} `json:"error"`
			}
			if b, err := runtime.Payload(respErr.RawResponse); err == nil {
				_ = json.Unmarshal(b, &body)
			}
			if ie := body.Error.InnerError; ie != nil && ie.Code != "" {
				f.Code = ie.Code
			}
			f.Message = oneLine(body.Error.Message)
		}
		return f
	case errors.Is(err, context.Canceled):
		return Failure{Message: "canceled"}
	case errors.As(err, &nf):
		return Failure{Class: nf.Class, Host: nf.Host, Message: oneLine(nf.Detail), Retryable: nf.Retryable}
	}
	// No response: the network, a timeout, TLS. Retry these; the deadline
	// bounds them.
	return Failure{Message: oneLine(err.Error()), Retryable: true}
}

func retryableStatus(s int) bool {
	return s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500
}

// retryAfter reads Retry-After (seconds or an HTTP date) and the millisecond
// variants Azure services send.
func retryAfter(resp *http.Response) time.Duration {
	h := resp.Header
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	if v := h.Get("X-Ms-Retry-After-Ms"); v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessage {
		s = s[:maxMessage] + "…"
	}
	return s
}
