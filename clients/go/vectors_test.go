package keymesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The shared conformance vectors (test/vectors/README.md); every case must run.
const vectorsDir = "../../test/vectors"

type headerVectors struct {
	Now   time.Time `json:"now"`
	Cases []struct {
		Name    string            `json:"name"`
		Headers map[string]string `json:"headers"`
		Expect  map[string]*int64 `json:"expect"`
	} `json:"cases"`
}

type classificationVectors struct {
	Now   time.Time `json:"now"`
	Cases []struct {
		Name  string `json:"name"`
		Input struct {
			Status  *int              `json:"status"`
			Headers map[string]string `json:"headers"`
			Error   *errorShape       `json:"error"`
		} `json:"input"`
		Expect struct {
			Outcome      string `json:"outcome"`
			RetryAfterMs *int64 `json:"retry_after_ms"`
		} `json:"expect"`
	} `json:"cases"`
}

type errorShape struct {
	Shape   string            `json:"shape"`
	Status  json.RawMessage   `json:"status"` // int for openai/anthropic, string for gemini
	Code    json.RawMessage   `json:"code"`   // string for openai, int for gemini
	Type    *string           `json:"type"`
	Message string            `json:"message"`
	Headers map[string]string `json:"headers"`
	Error   *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	Details []map[string]any `json:"details"`
}

func readVectors(t *testing.T, name string, into any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatalf("conformance vectors missing: %v", err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
}

func header(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h[k] = []string{v} // as sent, not canonicalised: the parser must match names case-insensitively
	}
	return h
}

func TestHeaderVectors(t *testing.T) {
	var v headerVectors
	readVectors(t, "headers.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no header vectors")
	}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			rl := ParseRateLimit(header(c.Headers), v.Now)
			got := map[string]*int64{
				"requests_remaining": rl.RequestsRemaining,
				"requests_limit":     rl.RequestsLimit,
				"requests_reset_ms":  ms(rl.RequestsReset),
				"tokens_remaining":   rl.TokensRemaining,
				"tokens_limit":       rl.TokensLimit,
				"tokens_reset_ms":    ms(rl.TokensReset),
				"retry_after_ms":     ms(rl.RetryAfter),
			}
			if len(c.Expect) != len(got) {
				t.Fatalf("vector has keys %v", c.Expect)
			}
			for k, want := range c.Expect {
				if show(got[k]) != show(want) {
					t.Errorf("%s = %s, want %s", k, show(got[k]), show(want))
				}
			}
		})
	}
}

func TestClassificationVectors(t *testing.T) {
	var v classificationVectors
	readVectors(t, "classification.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no classification vectors")
	}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			status := 0
			if c.Input.Status != nil {
				status = *c.Input.Status
			}
			o := classifyAt(status, header(c.Input.Headers), nativeError(t, c.Input.Error), v.Now)
			if string(o.Kind) != c.Expect.Outcome {
				t.Errorf("outcome = %s, want %s", o.Kind, c.Expect.Outcome)
			}
			if show(ms(o.RateLimit.RetryAfter)) != show(c.Expect.RetryAfterMs) {
				t.Errorf("retry_after_ms = %s, want %s", show(ms(o.RateLimit.RetryAfter)), show(c.Expect.RetryAfterMs))
			}
		})
	}
}

// nativeError builds a value shaped like the SDK's error for a vector's error shape.
func nativeError(t *testing.T, e *errorShape) error {
	t.Helper()
	if e == nil {
		return nil
	}
	switch e.Shape {
	case "openai":
		var status int
		var code string
		mustJSON(t, e.Status, &status)
		mustJSON(t, e.Code, &code)
		typ := ""
		if e.Type != nil {
			typ = *e.Type
		}
		return &openaiError{StatusCode: status, Code: code, Type: typ, Message: e.Message, Response: response(status, e.Headers)}
	case "anthropic":
		var status int
		mustJSON(t, e.Status, &status)
		body, _ := json.Marshal(map[string]any{"type": "error", "error": e.Error})
		return &anthropicError{StatusCode: status, Response: response(status, e.Headers), raw: string(body)}
	case "gemini":
		var code int
		var st string
		mustJSON(t, e.Code, &code)
		mustJSON(t, e.Status, &st)
		return geminiError{Code: code, Status: st, Message: e.Message, Details: e.Details}
	case "timeout":
		return context.DeadlineExceeded
	case "connection":
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	t.Fatalf("unknown error shape %q", e.Shape)
	return nil
}

func mustJSON(t *testing.T, raw json.RawMessage, into any) {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
}

func ms(d *time.Duration) *int64 {
	if d == nil {
		return nil
	}
	n := d.Milliseconds()
	return &n
}

func show(n *int64) string {
	if n == nil {
		return "null"
	}
	b, _ := json.Marshal(*n)
	return string(b)
}

// grpcLikeError has a numeric Code that is not an HTTP status.
type grpcLikeError struct{ Code int }

func (grpcLikeError) Error() string { return "rpc error" }

func TestClassifyReadsJoinedErrorsAndIgnoresNonHTTPCodes(t *testing.T) {
	joined := errors.Join(errors.New("while answering"), fmt.Errorf("call: %w", &openaiError{StatusCode: 401}))
	if o := Classify(0, nil, joined); o.Kind != Auth || o.HTTPStatus != 401 {
		t.Errorf("joined: %+v", o)
	}
	if o := Classify(0, nil, grpcLikeError{Code: 5}); o.Kind != Transient || o.HTTPStatus != 0 {
		t.Errorf("a gRPC code was taken for an HTTP status: %+v", o)
	}
	if o := Classify(0, nil, fmt.Errorf("user left: %w", context.Canceled)); o.Kind != ClientError {
		t.Errorf("cancellation: %+v", o)
	}
}
