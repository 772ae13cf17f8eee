package keymesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// These tests run against a real KeyMesh server at KEYMESH_ADDR (KEYMESH_TOKEN when it needs
// one); each creates its own pool.

func e2eClient(t *testing.T) *Client {
	t.Helper()
	addr := os.Getenv("KEYMESH_ADDR")
	if addr == "" {
		t.Skip("KEYMESH_ADDR not set: no server to test against")
	}
	opts := []Option{WithInsecure()}
	if tok := os.Getenv("KEYMESH_TOKEN"); tok != "" {
		opts = append(opts, WithBearerToken(tok))
	}
	c, err := NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// e2ePool creates a uniquely named pool with the given keys (id = label) and removes it after.
func e2ePool(t *testing.T, c *Client, keyIDs ...string) string {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := strings.ToLower("go-" + strings.ReplaceAll(t.Name(), "/", "-"))
	name = name[:min(len(name), 50)] + "-" + hex.EncodeToString(suffix)
	ctx := context.Background()
	_, err := c.CreatePool(ctx, &keymeshv1.CreatePoolRequest{Pool: &keymeshv1.Pool{
		Name: name, MinTtl: durationpb.New(time.Second), DefaultTtl: durationpb.New(30 * time.Second),
	}})
	if err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = c.DeletePool(context.Background(), &keymeshv1.DeletePoolRequest{Name: name, Force: true})
	})
	for _, id := range keyIDs {
		if _, err := c.AddKey(ctx, &keymeshv1.AddKeyRequest{Pool: name, Key: &keymeshv1.Key{Id: id, Label: "label-" + id}, Secret: "sk-test-" + id}); err != nil {
			t.Fatalf("add key %s: %v", id, err)
		}
	}
	return name
}

func liveLeases(t *testing.T, c *Client, pool string) []*keymeshv1.Lease {
	t.Helper()
	resp, err := c.ListLeases(context.Background(), &keymeshv1.ListLeasesRequest{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetLeases()
}

func keyStats(t *testing.T, c *Client, pool, keyID string) *keymeshv1.KeyStats {
	t.Helper()
	resp, err := c.GetPoolStats(context.Background(), &keymeshv1.GetPoolStatsRequest{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range resp.GetStats().GetKeys() {
		if k.GetKeyId() == keyID {
			return k
		}
	}
	t.Fatalf("no stats for key %s", keyID)
	return nil
}

func TestE2ELeaseOutlivesItsTTLAndIsReleased(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1")
	var leaseID string
	err := c.WithLease(context.Background(), pool, func(ctx context.Context, l *Lease) error {
		leaseID = l.LeaseID
		if l.Key != "sk-test-k1" || l.KeyLabel != "label-k1" {
			t.Errorf("lease = %v key %q", l, l.Key)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("lease ended while in use: %v", context.Cause(ctx))
		case <-time.After(2500 * time.Millisecond): // 2.5 ttls: only renewals keep it alive
		}
		if n := len(liveLeases(t, c, pool)); n != 1 {
			t.Errorf("%d live leases past the ttl, want 1", n)
		}
		return nil
	}, TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(liveLeases(t, c, pool)); n != 0 {
		t.Errorf("%d live leases after WithLease", n)
	}
	_, err = c.Release(context.Background(), &keymeshv1.ReleaseRequest{LeaseId: leaseID})
	if ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_LEASE_RELEASED {
		t.Errorf("second release: reason %v (%v), want LEASE_RELEASED", ReasonOf(err), err)
	}
	if ks := keyStats(t, c, pool, "k1"); ks.GetEmaLatency() == nil || ks.GetEmaLatency().AsDuration() < 2*time.Second {
		t.Errorf("ema latency %v, want the measured ~2.5s", ks.GetEmaLatency())
	}
}

func TestE2EReportsFailuresAndRateLimits(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1")
	failure := &openaiError{StatusCode: 500, Type: "server_error", Message: "boom"}
	err := c.WithLease(context.Background(), pool, func(context.Context, *Lease) error { return failure })
	if !errors.Is(err, failure) {
		t.Fatalf("err = %v", err)
	}
	if ks := keyStats(t, c, pool, "k1"); ks.GetConsecutiveFailures() != 1 || ks.GetActiveLeases() != 0 {
		t.Errorf("after a 500: %v", ks)
	}
	err = c.WithLease(context.Background(), pool, func(context.Context, *Lease) error { return rateLimited("30") })
	if err == nil {
		t.Fatal("rate limit not returned")
	}
	ks := keyStats(t, c, pool, "k1")
	if ks.GetCooldownRemaining().AsDuration() < 20*time.Second || ks.GetEligible() {
		t.Errorf("after a 429 with retry-after 30: cooldown %v eligible %v", ks.GetCooldownRemaining().AsDuration(), ks.GetEligible())
	}
}

func TestE2EEndsTheLeaseOnErrorAndOnCancellation(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1")
	_ = c.WithLease(context.Background(), pool, func(context.Context, *Lease) error {
		return &openaiError{StatusCode: 400, Message: "bad request"}
	})
	if n := len(liveLeases(t, c, pool)); n != 0 {
		t.Errorf("%d live leases after an error", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err := c.WithLease(ctx, pool, func(ctx context.Context, l *Lease) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	if n := len(liveLeases(t, c, pool)); n != 0 {
		t.Errorf("%d live leases after cancellation", n)
	}
	if ks := keyStats(t, c, pool, "k1"); ks.GetConsecutiveFailures() != 0 {
		t.Errorf("a cancellation penalised the key: %v", ks)
	}
}

func TestE2ERevocationCancelsTheHolder(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1")
	err := c.WithLease(context.Background(), pool, func(ctx context.Context, l *Lease) error {
		if _, err := c.DisableKey(context.Background(), &keymeshv1.DisableKeyRequest{Pool: pool, KeyId: l.KeyID, Reason: "e2e"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("holder not told of the revocation")
		}
		var gone *LeaseGoneError
		if !errors.As(context.Cause(ctx), &gone) || gone.Reason != keymeshv1.ErrorReason_ERROR_REASON_LEASE_REVOKED || !l.Revoked() {
			t.Errorf("cause = %v", context.Cause(ctx))
		}
		return ctx.Err()
	}, TTL(3*time.Second)) // a revocation reaches a lease from its first renewal on (ttl/3)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestE2EDoMovesToAnotherKey(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1", "k2")
	var used []string
	err := c.Do(context.Background(), pool, func(_ context.Context, l *Lease) error {
		used = append(used, l.KeyID)
		if len(used) == 1 {
			return rateLimited("60")
		}
		return nil
	}, RetryBudget(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != 2 || used[0] == used[1] {
		t.Errorf("keys used = %v, want two different keys", used)
	}
}
