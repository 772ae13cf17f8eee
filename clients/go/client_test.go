package keymesh

import (
	"context"
	"errors"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBearerTokenIsSentOnEveryCall(t *testing.T) {
	f := newFakePool("a")
	f.token = "s3cret-token"
	c := f.serve(t, WithBearerToken("s3cret-token"))
	if err := c.WithLease(context.Background(), "p", func(context.Context, *Lease) error { return nil }); err != nil {
		t.Fatal(err)
	}
	wrong := f.serve(t, WithBearerToken("other"))
	_, err := wrong.Acquire(context.Background(), &keymeshv1.AcquireRequest{Pool: "p"})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
}

func TestBearerTokenOverPlaintextOnlyToLoopback(t *testing.T) {
	for _, addr := range []string{"10.0.0.7:50051", "keymesh.internal:50051", "dns:///keymesh.internal:50051"} {
		if _, err := NewClient(addr, WithInsecure(), WithBearerToken("t")); !errors.Is(err, ErrTokenOverPlaintext) {
			t.Errorf("%s: err = %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:50051", "localhost:50051", "[::1]:50051", "dns:///localhost:50051"} {
		c, err := NewClient(addr, WithInsecure(), WithBearerToken("t"))
		if err != nil {
			t.Errorf("%s: %v", addr, err)
			continue
		}
		_ = c.Close()
	}
}

func TestReasonOfIgnoresErrorsWithoutDetail(t *testing.T) {
	if r := ReasonOf(errors.New("plain")); r != keymeshv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Errorf("reason = %v", r)
	}
	if r := ReasonOf(status.Error(codes.NotFound, "no detail")); r != keymeshv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Errorf("reason = %v", r)
	}
	wrapped := errors.Join(errors.New("ctx"), withDetail(codes.NotFound, keymeshv1.ErrorReason_ERROR_REASON_POOL_NOT_FOUND, 0))
	if r := ReasonOf(wrapped); r != keymeshv1.ErrorReason_ERROR_REASON_POOL_NOT_FOUND {
		t.Errorf("wrapped reason = %v", r)
	}
	if _, ok := RetryAfter(wrapped); ok {
		t.Error("retry-after reported where none was sent")
	}
}

func TestDefaultTimeoutBoundsUnaryCallsWithoutDeadline(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t, WithDefaultTimeout(50*time.Millisecond))
	_, err := c.RenewLease(context.Background(), &keymeshv1.RenewLeaseRequest{LeaseId: "lease-1"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
}
