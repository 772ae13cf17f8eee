package keymesh

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Do runs fn under a lease like WithLease and retries a failed call within a total time budget
// (RetryBudget, default 30s). Rate limits, auth and quota failures and transient errors move at
// once to another key (exclude_key_ids). When no other key is eligible, and after an overload, it
// backs off with full jitter and then waits for any key — the server keeps a rate-limited key
// cooling until its retry-after — unless that retry-after reaches past the budget, when it gives
// up at once. Client errors are not retried. It returns nil on success, otherwise the last error.
func (c *Client) Do(ctx context.Context, pool string, fn func(ctx context.Context, l *Lease) error, opts ...LeaseOption) error {
	cfg := newLeaseConfig(opts)
	deadline := time.Now().Add(cfg.budget)
	waitForAny := func() (*Lease, error) {
		return c.acquire(ctx, pool, cfg, cfg.exclude, max(min(cfg.wait, time.Until(deadline)), 0))
	}
	exclude := slices.Clone(cfg.exclude)
	var lastErr error
	l, err := waitForAny()
	for attempt := 0; ; attempt++ {
		if err != nil {
			switch {
			case lastErr != nil && ReasonOf(err) == keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE:
				return lastErr
			case status.Code(err) != codes.Unavailable:
				return err
			}
			lastErr = err
		} else {
			outcome, runErr := c.run(ctx, l, fn, cfg)
			if runErr == nil {
				return nil
			}
			lastErr = runErr
			if !outcome.Retryable() || ctx.Err() != nil {
				return runErr
			}
			if outcome.Kind != Overloaded {
				if !slices.Contains(exclude, l.KeyID) {
					exclude = append(exclude, l.KeyID)
				}
				// Another key needs no backoff.
				if l, err = c.acquire(ctx, pool, cfg, exclude, 0); err == nil || ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE {
					continue
				}
				if ra := outcome.RateLimit.RetryAfter; outcome.Kind == RateLimited && ra != nil && time.Now().Add(*ra).After(deadline) {
					return runErr
				}
			}
		}
		pause := fullJitter(cfg.backoffBase, cfg.backoffCap, attempt)
		if time.Now().Add(pause).After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return errors.Join(lastErr, ctx.Err())
		case <-time.After(pause):
		}
		l, err = waitForAny()
	}
}

// fullJitter is a random pause in [0, min(ceiling, base·2^attempt)) ("full jitter").
func fullJitter(base, ceiling time.Duration, attempt int) time.Duration {
	d := ceiling
	if attempt < 30 {
		d = min(ceiling, base<<attempt)
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
