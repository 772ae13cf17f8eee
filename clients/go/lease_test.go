package keymesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestWithLeaseReleasesWithLatencyAndUsage(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	var seen *Lease
	err := c.WithLease(context.Background(), "openai", func(ctx context.Context, l *Lease) error {
		seen = l
		l.SetUsage(12, 34)
		f.awaitRenewals(t, l.LeaseID, 1)
		return nil
	}, Holder("worker-1"), WaitTimeout(2*time.Second), TTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	rel, ok := f.nextEnd(t).(*keymeshv1.ReleaseRequest)
	if !ok {
		t.Fatalf("lease not released: %T", rel)
	}
	if rel.GetLeaseId() != seen.LeaseID || rel.GetUsage().GetInputTokens() != 12 || rel.GetUsage().GetOutputTokens() != 34 {
		t.Errorf("release = %v", rel)
	}
	if rel.GetLatency().AsDuration() <= 0 {
		t.Errorf("latency not measured: %v", rel.GetLatency())
	}
	acq := f.acquireRequests()[0]
	if acq.GetHolder() != "worker-1" || acq.GetWaitTimeout().AsDuration() != 2*time.Second || acq.GetLeaseTtl().AsDuration() != 30*time.Second {
		t.Errorf("acquire = %v", acq)
	}
	if seen.Key != "sk-secret-a" || seen.KeyID != "a" || seen.KeyLabel != "label-a" || seen.Metadata["base_url"] == "" {
		t.Errorf("lease fields = %+v", seen)
	}
}

func TestWithLeaseRenewsAndExtendsExpiry(t *testing.T) {
	f := newFakePool("a")
	f.ttl = time.Hour
	c := f.serve(t)
	err := c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
		before := l.ExpiresAt()
		f.awaitRenewals(t, l.LeaseID, 3)
		if !l.ExpiresAt().After(before) {
			t.Errorf("expiry not extended by renewals: %v -> %v", before, l.ExpiresAt())
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	f.nextEnd(t)
}

func TestWithLeaseRevocationCancelsContext(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	err := c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
		f.awaitRenewals(t, l.LeaseID, 1)
		f.revoke <- l.LeaseID
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("holder not told of the revocation")
		}
		var gone *LeaseGoneError
		if !errors.As(context.Cause(ctx), &gone) || gone.Reason != keymeshv1.ErrorReason_ERROR_REASON_LEASE_REVOKED {
			t.Errorf("cause = %v", context.Cause(ctx))
		}
		if !l.Revoked() {
			t.Error("Revoked() = false after a pushed revocation")
		}
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if m, ok := f.nextEnd(t).(*keymeshv1.MarkFailedRequest); !ok || m.GetReason() != keymeshv1.FailureReason_FAILURE_REASON_CLIENT_ERROR {
		t.Errorf("a revoked lease's abandoned call must not penalise the key: %v", m)
	}
}

func TestWithLeaseEndsWhenRenewalIsRefused(t *testing.T) {
	f := newFakePool("a")
	f.refuse = true
	c := f.serve(t)
	_ = c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
		awaitDone(t, ctx)
		if g := l.Gone(); g == nil || g.Reason != keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED {
			t.Errorf("gone = %v", g)
		}
		return nil
	})
	f.nextEnd(t)
}

func TestWithLeaseEndsWhenNoStreamRenewsItBeforeExpiry(t *testing.T) {
	f := newFakePool("a")
	f.ttl = 200 * time.Millisecond
	f.keepAliveErr = status.Error(codes.Unavailable, "down")
	c := f.serve(t)
	_ = c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
		awaitDone(t, ctx)
		if g := l.Gone(); g == nil || g.Reason != keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED {
			t.Errorf("gone = %v", g)
		}
		if time.Now().Before(l.ExpiresAt()) {
			t.Errorf("lease ended before its expiry %v", l.ExpiresAt())
		}
		return nil
	})
	f.nextEnd(t)
}

func TestOneStreamRenewsEveryLeaseOfAClient(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	started := make(chan string, 3)
	done := make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			errs <- c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
				started <- l.LeaseID
				<-done
				return nil
			})
		}()
	}
	ids := map[string]bool{}
	for range 3 {
		ids[<-started] = true
	}
	for renewed := map[string]bool{}; len(renewed) < 3; {
		select {
		case id := <-f.renewals:
			if ids[id] {
				renewed[id] = true
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("renewed only %v of %v", renewed, ids)
		}
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := f.streams.Load(); n != 1 {
		t.Errorf("%d KeepAlive streams for 3 concurrent leases, want 1", n)
	}
}

func awaitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lease context never ended")
	}
}

func TestWithLeaseReportsClassifiedErrors(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		check func(t *testing.T, m proto.Message)
	}{
		{"openai 429", &openaiError{StatusCode: 429, Type: "requests", Response: response(429, map[string]string{"retry-after": "20", "x-ratelimit-remaining-requests": "0"})},
			func(t *testing.T, m proto.Message) {
				r, ok := m.(*keymeshv1.MarkRateLimitedRequest)
				if !ok || r.GetRetryAfter().AsDuration() != 20*time.Second || r.GetRateLimit().GetRequestsRemaining() != 0 || r.GetRateLimit().RequestsRemaining == nil {
					t.Errorf("got %T %v", m, m)
				}
			}},
		{"openai insufficient_quota", &openaiError{StatusCode: 429, Code: "insufficient_quota", Type: "insufficient_quota"},
			wantFailed(keymeshv1.FailureReason_FAILURE_REASON_QUOTA_EXHAUSTED, 429)},
		{"anthropic overloaded", &anthropicError{StatusCode: 529, raw: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
			wantFailed(keymeshv1.FailureReason_FAILURE_REASON_OVERLOADED, 529)},
		{"gemini unauthenticated", fmt.Errorf("generate: %w", geminiError{Code: 401, Status: "UNAUTHENTICATED", Message: "API key not valid"}),
			wantFailed(keymeshv1.FailureReason_FAILURE_REASON_AUTH, 401)},
		{"timeout", fmt.Errorf("call: %w", context.DeadlineExceeded),
			wantFailed(keymeshv1.FailureReason_FAILURE_REASON_TRANSIENT, 0)},
		{"no response", errors.New("read answer: unexpected EOF"),
			wantFailed(keymeshv1.FailureReason_FAILURE_REASON_TRANSIENT, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePool("a")
			c := f.serve(t)
			err := c.WithLease(context.Background(), "p", func(context.Context, *Lease) error { return tc.err })
			if !errors.Is(err, tc.err) {
				t.Errorf("WithLease returned %v, want fn's error", err)
			}
			tc.check(t, f.nextEnd(t))
		})
	}
}

func wantFailed(reason keymeshv1.FailureReason, httpStatus int32) func(*testing.T, proto.Message) {
	return func(t *testing.T, m proto.Message) {
		t.Helper()
		r, ok := m.(*keymeshv1.MarkFailedRequest)
		if !ok || r.GetReason() != reason || r.GetHttpStatus() != httpStatus {
			t.Errorf("got %T %v, want MarkFailed %v %d", m, m, reason, httpStatus)
		}
	}
}

func TestWithLeaseFailureMessageNeverCarriesTheKey(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	_ = c.WithLease(context.Background(), "p", func(_ context.Context, l *Lease) error {
		return &openaiError{StatusCode: 401, Message: "Incorrect API key provided: " + l.Key}
	})
	m := f.nextEnd(t).(*keymeshv1.MarkFailedRequest)
	if m.GetMessage() != "Incorrect API key provided: [key]" {
		t.Errorf("message = %q", m.GetMessage())
	}
}

func TestWithLeaseReportWinsOverReturnValue(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	err := c.WithLease(context.Background(), "p", func(_ context.Context, l *Lease) error {
		h := http.Header{}
		h.Set("Retry-After", "3")
		l.Report(http.StatusTooManyRequests, h)
		return nil
	})
	var pe *ProviderError
	if !errors.As(err, &pe) || pe.Outcome.Kind != RateLimited {
		t.Fatalf("err = %v, want a rate-limited ProviderError", err)
	}
	r, ok := f.nextEnd(t).(*keymeshv1.MarkRateLimitedRequest)
	if !ok || r.GetRetryAfter().AsDuration() != 3*time.Second {
		t.Errorf("got %v", r)
	}
}

func TestWithLeaseEndsTheLeaseWhenCallerCancels(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	err := c.WithLease(ctx, "p", func(ctx context.Context, l *Lease) error {
		f.awaitRenewals(t, l.LeaseID, 1)
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := f.nextEnd(t).(*keymeshv1.MarkFailedRequest); !ok {
		t.Error("a cancelled caller's lease was not ended")
	}
}

func TestWithLeaseEndsTheLeaseWhenFnPanics(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic was swallowed")
			}
		}()
		_ = c.WithLease(context.Background(), "p", func(context.Context, *Lease) error { panic("boom") })
	}()
	if _, ok := f.nextEnd(t).(*keymeshv1.MarkFailedRequest); !ok {
		t.Error("a panicking holder's lease was not ended")
	}
}

func TestWithLeaseReturnsAcquireErrorWithReason(t *testing.T) {
	f := newFakePool()
	c := f.serve(t)
	called := false
	err := c.WithLease(context.Background(), "p", func(context.Context, *Lease) error { called = true; return nil }, WaitTimeout(0))
	if called {
		t.Error("fn ran without a lease")
	}
	if ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE {
		t.Errorf("reason = %v (%v)", ReasonOf(err), err)
	}
	if d, ok := RetryAfter(err); !ok || d != time.Second {
		t.Errorf("retry after = %v %v", d, ok)
	}
}

func TestLeaseFormattingHidesTheKey(t *testing.T) {
	l := &Lease{LeaseID: "lease-1", Key: "sk-very-secret", KeyLabel: "main"}
	for _, s := range []string{fmt.Sprint(l), fmt.Sprintf("%v %+v %#v %s", l, l, l, l)} {
		if strings.Contains(s, "sk-very-secret") {
			t.Errorf("formatted lease shows the key: %s", s)
		}
	}
}

func TestTruncateKeepsValidUTF8(t *testing.T) {
	msg := strings.Repeat("é", 150) // 300 bytes
	got := truncate(msg, 199)
	if !utf8.ValidString(got) || len(got) > 199 || len(got) < 196 {
		t.Errorf("truncate = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if redact("no key here", "") != "no key here" {
		t.Error("an empty key rewrote the message")
	}
}

func TestAFailedReleaseIsLoggedNotReturned(t *testing.T) {
	f := newFakePool("a")
	f.releaseErr = status.Error(codes.Unavailable, "database down")
	var logged bytes.Buffer
	c := f.serve(t, WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	err := c.WithLease(context.Background(), "p", func(context.Context, *Lease) error { return nil })
	if err != nil {
		t.Errorf("a done call failed because its release did: %v", err)
	}
	f.nextEnd(t)
	if !strings.Contains(logged.String(), "could not end lease") || !strings.Contains(logged.String(), "key_id=a") {
		t.Errorf("log = %q", logged.String())
	}
	if strings.Contains(logged.String(), "sk-secret") {
		t.Errorf("the key was logged: %q", logged.String())
	}
}

func TestReportedSuccessCarriesTheProviderBudgetToRelease(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	err := c.WithLease(context.Background(), "p", func(_ context.Context, l *Lease) error {
		h := http.Header{}
		h.Set("x-ratelimit-remaining-requests", "5")
		h.Set("x-ratelimit-reset-tokens", "6m0s")
		l.Report(http.StatusOK, h)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rel, ok := f.nextEnd(t).(*keymeshv1.ReleaseRequest)
	if !ok || rel.GetRateLimit().GetRequestsRemaining() != 5 || rel.GetRateLimit().GetTokensReset().AsDuration() != 6*time.Minute {
		t.Errorf("release = %v", rel)
	}
}

func TestWithLeaseReportsTheCallersDeadlineAsTransient(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.WithLease(ctx, "p", func(ctx context.Context, l *Lease) error {
		awaitDone(t, ctx)
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	wantFailed(keymeshv1.FailureReason_FAILURE_REASON_TRANSIENT, 0)(t, f.nextEnd(t))
}
