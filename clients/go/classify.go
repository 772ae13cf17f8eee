package keymesh

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
)

// Kind is the class of a provider call's outcome; it decides how KeyMesh treats the key.
type Kind string

const (
	// Success: a 2xx answer.
	Success Kind = "success"
	// RateLimited: a 429; the key cools down (for retry-after when the provider sent one).
	RateLimited Kind = "rate_limited"
	// Auth: 401/403, or Gemini's API_KEY_INVALID or API_KEY_EXPIRED (a 400): the key was rejected; KeyMesh disables it
	// until an operator enables it.
	Auth Kind = "auth"
	// QuotaExhausted: the key's billing quota is gone (insufficient_quota, 402); KeyMesh disables it.
	QuotaExhausted Kind = "quota_exhausted"
	// Transient: other 5xx, 408, timeouts and connection errors; counts toward the key's breaker.
	Transient Kind = "transient"
	// Overloaded: 529, or 503 saying "overloaded": the provider as a whole; no penalty to the key.
	Overloaded Kind = "overloaded"
	// ClientError: other 4xx, and errors that are not about the provider; no penalty to the key.
	ClientError Kind = "client_error"
)

// Outcome is a classified provider call.
type Outcome struct {
	Kind Kind
	// HTTPStatus is the provider's status, 0 when no response arrived.
	HTTPStatus int
	// RateLimit is the provider's budget from the response headers, including retry-after.
	RateLimit RateLimit
	// Message is a short description for operators.
	Message string
}

// Retryable reports whether the same request may succeed on a retry (perhaps with another key).
func (o Outcome) Retryable() bool {
	switch o.Kind {
	case RateLimited, Transient, Overloaded, Auth, QuotaExhausted:
		return true
	}
	return false
}

// ProviderError is returned by WithLease when fn returned nil but reported a failed call with
// Lease.Report, so that callers (and Do) see the failure.
type ProviderError struct{ Outcome Outcome }

func (e *ProviderError) Error() string {
	return "keymesh: provider call " + string(e.Outcome.Kind) + ": " + e.Outcome.Message
}

// Classify turns a provider response status and headers, an SDK error, or both, into an
// Outcome. status 0 means "take it from err". SDK errors are recognised by their shape, with no
// dependency on the SDKs: openai-go's *openai.Error (StatusCode, Code, Type, Response),
// anthropic-sdk-go's *anthropic.Error (StatusCode, Response, RawJSON()), google.golang.org/genai's
// APIError (Code, Status, Message, Details), and any error exposing the same fields.
func Classify(status int, header http.Header, err error) Outcome {
	return classifyAt(status, header, err, time.Now())
}

func classifyAt(status int, header http.Header, err error, now time.Time) Outcome {
	sig := inspect(err)
	if sig.status != 0 {
		status = sig.status
	}
	merged := http.Header{}
	for k, v := range header {
		merged[http.CanonicalHeaderKey(k)] = v
	}
	for k, v := range sig.header {
		merged[http.CanonicalHeaderKey(k)] = v
	}
	o := Outcome{HTTPStatus: status, RateLimit: ParseRateLimit(merged, now), Message: sig.message}
	o.Kind = kindOf(status, err, sig)
	if o.RateLimit.RetryAfter == nil {
		o.RateLimit.RetryAfter = sig.retryDelay
	}
	if o.RateLimit.RetryAfter == nil && o.Kind == RateLimited {
		o.RateLimit.RetryAfter = exhaustedReset(o.RateLimit)
	}
	if o.Message == "" {
		o.Message = http.StatusText(status)
	}
	return o
}

// exhaustedReset is the latest reset among the budgets the provider reports as used up.
func exhaustedReset(rl RateLimit) *time.Duration {
	var latest *time.Duration
	for _, b := range []struct {
		remaining *int64
		reset     *time.Duration
	}{{rl.RequestsRemaining, rl.RequestsReset}, {rl.TokensRemaining, rl.TokensReset}} {
		if b.remaining != nil && *b.remaining == 0 && b.reset != nil && (latest == nil || *b.reset > *latest) {
			latest = b.reset
		}
	}
	return latest
}

// kindOf applies the rules of test/vectors/README.md in order; the first match wins.
func kindOf(status int, err error, sig signals) Kind {
	switch {
	case status == 0 && err != nil:
		return kindOfNoResponse(err)
	case sig.hasCode(quotaCodes...):
		return QuotaExhausted
	case sig.hasCode("overloaded_error"):
		return Overloaded
	case status >= 200 && status < 300:
		return Success
	case status == http.StatusUnauthorized || status == http.StatusForbidden || sig.hasReason(keyRejectedReasons...):
		return Auth
	case status == http.StatusPaymentRequired:
		return QuotaExhausted
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status == 529:
		return Overloaded
	case status == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(sig.message), "overloaded"):
		return Overloaded
	case status == 0 || status >= 500 || status == http.StatusRequestTimeout:
		return Transient
	default:
		return ClientError
	}
}

// quotaCodes are the error codes and types providers use when a key's billing quota is gone.
var quotaCodes = []string{"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error"}

// keyRejectedReasons are the google.rpc.ErrorInfo reasons Gemini sends with a 400 for a key it rejects.
var keyRejectedReasons = []string{"API_KEY_INVALID", "API_KEY_EXPIRED"}

// kindOfNoResponse classifies an error that came without an HTTP status.
func kindOfNoResponse(err error) Kind {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return Transient
	}
	// The caller gave up: no verdict on the key (an addition to the shared rules, which have no
	// cancellation case).
	if errors.Is(err, context.Canceled) {
		return ClientError
	}
	// Timeouts, connection errors and any other error without a response: no response is transient.
	return Transient
}

// FailureReason is the wire form of a failed outcome's kind, for MarkFailed.
func (k Kind) FailureReason() keymeshv1.FailureReason {
	switch k {
	case Auth:
		return keymeshv1.FailureReason_FAILURE_REASON_AUTH
	case QuotaExhausted:
		return keymeshv1.FailureReason_FAILURE_REASON_QUOTA_EXHAUSTED
	case Transient:
		return keymeshv1.FailureReason_FAILURE_REASON_TRANSIENT
	case Overloaded:
		return keymeshv1.FailureReason_FAILURE_REASON_OVERLOADED
	case ClientError:
		return keymeshv1.FailureReason_FAILURE_REASON_CLIENT_ERROR
	}
	return keymeshv1.FailureReason_FAILURE_REASON_UNSPECIFIED
}

// signals is what an SDK error says about the failed call.
type signals struct {
	status     int
	codes      []string // error codes and types, e.g. "insufficient_quota", "overloaded_error"
	message    string
	header     http.Header
	retryDelay *time.Duration
	reasons    []string // the reasons of a Gemini error's google.rpc.ErrorInfo details
}

func (s signals) hasCode(codes ...string) bool {
	for _, c := range s.codes {
		if slices.Contains(codes, c) {
			return true
		}
	}
	return false
}

func (s signals) hasReason(reasons ...string) bool {
	for _, r := range s.reasons {
		if slices.Contains(reasons, r) {
			return true
		}
	}
	return false
}

// inspect walks err's tree (Unwrap() error and Unwrap() []error) and reads the first SDK-shaped
// error it finds.
func inspect(err error) signals {
	var sig signals
	pending := []error{err}
	for len(pending) > 0 {
		e := pending[0]
		pending = pending[1:]
		if e == nil {
			continue
		}
		if readShape(e, &sig) {
			break
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			pending = append(pending, u.Unwrap())
		case interface{ Unwrap() []error }:
			pending = append(pending, u.Unwrap()...)
		}
	}
	return sig
}

// isHTTPStatus tells an HTTP status from other numeric codes (e.g. gRPC's) in a Code field.
func isHTTPStatus(n int) bool { return n >= 100 && n <= 599 }

// rawJSONer is anthropic-sdk-go's and openai-go's access to the error body.
type rawJSONer interface{ RawJSON() string }

// readShape fills sig from e's exported fields; false when e has none of the known ones.
func readShape(e error, sig *signals) bool {
	v := reflect.ValueOf(e)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return false
	}
	found := false
	if n, ok := intField(v, "StatusCode"); ok && isHTTPStatus(n) {
		sig.status, found = n, true
	}
	if n, ok := intField(v, "Code"); ok && sig.status == 0 && isHTTPStatus(n) {
		sig.status, found = n, true // genai's APIError.Code is the HTTP status
	}
	for _, name := range []string{"Code", "Type"} {
		if s, ok := stringField(v, name); ok && s != "" {
			sig.codes, found = append(sig.codes, s), true
		}
	}
	if inner := v.FieldByName("Error"); inner.IsValid() && inner.CanInterface() {
		for inner.Kind() == reflect.Pointer && !inner.IsNil() {
			inner = inner.Elem()
		}
		if inner.Kind() == reflect.Struct {
			if s, ok := stringField(inner, "Type"); ok && s != "" {
				sig.codes = append(sig.codes, s)
			}
		}
	}
	if s, ok := stringField(v, "Message"); ok {
		sig.message = s
	}
	if f := v.FieldByName("Response"); f.IsValid() && f.CanInterface() {
		if resp, ok := f.Interface().(*http.Response); ok && resp != nil {
			sig.header, found = resp.Header, true
			if sig.status == 0 && isHTTPStatus(resp.StatusCode) {
				sig.status = resp.StatusCode
			}
		}
	}
	if found {
		if r, ok := e.(rawJSONer); ok {
			readBody(r.RawJSON(), sig)
		}
		if d := v.FieldByName("Details"); d.IsValid() && d.CanInterface() {
			if details, ok := d.Interface().([]map[string]any); ok {
				sig.retryDelay = retryDelayOf(details)
				sig.reasons = errorInfoReasons(details)
			}
		}
	}
	return found
}

// readBody picks the error type and code out of a provider's JSON error body, e.g.
// {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}.
func readBody(raw string, sig *signals) {
	var body struct {
		Type  string `json:"type"`
		Code  any    `json:"code"`
		Error struct {
			Type    string `json:"type"`
			Code    any    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(raw), &body) != nil {
		return
	}
	for _, c := range []any{body.Type, body.Code, body.Error.Type, body.Error.Code} {
		if s, ok := c.(string); ok && s != "" && s != "error" {
			sig.codes = append(sig.codes, s)
		}
	}
	if sig.message == "" {
		sig.message = body.Error.Message
	}
}

// retryDelayOf reads google.rpc.RetryInfo's retryDelay ("20s") from Gemini error details.
func retryDelayOf(details []map[string]any) *time.Duration {
	for _, d := range details {
		if t, _ := d["@type"].(string); !strings.HasSuffix(t, "google.rpc.RetryInfo") {
			continue
		}
		if s, ok := d["retryDelay"].(string); ok {
			if dur, err := time.ParseDuration(s); err == nil && dur >= 0 {
				return truncMs(dur)
			}
		}
	}
	return nil
}

// errorInfoReasons reads google.rpc.ErrorInfo's reason ("API_KEY_INVALID") from Gemini error details.
func errorInfoReasons(details []map[string]any) []string {
	var reasons []string
	for _, d := range details {
		if t, _ := d["@type"].(string); !strings.HasSuffix(t, "google.rpc.ErrorInfo") {
			continue
		}
		if s, ok := d["reason"].(string); ok && s != "" {
			reasons = append(reasons, s)
		}
	}
	return reasons
}

func intField(v reflect.Value, name string) (int, bool) {
	f := v.FieldByName(name)
	if !f.IsValid() || !f.CanInterface() {
		return 0, false
	}
	switch f.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(f.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return int(f.Uint()), true
	}
	return 0, false
}

func stringField(v reflect.Value, name string) (string, bool) {
	f := v.FieldByName(name)
	if !f.IsValid() || !f.CanInterface() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}
