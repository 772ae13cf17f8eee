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
// (RetryBudget, default 30s). Rate limits, auth and quota failures and transient errors move to
// another key (exclude_key_ids); between attempts it backs off with full jitter. When no other
// key is eligible it waits for any key (the server keeps a rate-limited key cooling until its
// retry-after), and gives up at once when that retry-after reaches past the budget. It returns
// nil on success, otherwise the last error.
func (c *Client) Do(ctx context.Context, pool string, fn func(ctx context.Context, l *Lease) error, opts ...LeaseOption) error {
	cfg := newLeaseConfig(opts)
	deadline := time.Now().Add(cfg.budget)
	exclude := slices.Clone(cfg.exclude)
	var lastErr error
	pastBudget := false // the last rate-limited key's retry-after ends after the budget
	for attempt := 0; ; attempt++ {
		l, err := c.acquireWithin(ctx, pool, cfg, exclude, deadline, pastBudget)
		switch {
		case err == nil:
			outcome, runErr := c.run(ctx, l, fn, cfg)
			if runErr == nil {
				return nil
			}
			lastErr = runErr
			if !outcome.Retryable() || ctx.Err() != nil {
				return runErr
			}
			if outcome.Kind != Overloaded && !slices.Contains(exclude, l.KeyID) {
				exclude = append(exclude, l.KeyID)
			}
			ra := outcome.RateLimit.RetryAfter
			pastBudget = outcome.Kind == RateLimited && ra != nil && time.Now().Add(*ra).After(deadline)
		case lastErr != nil && ReasonOf(err) == keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE:
			return lastErr
		case status.Code(err) == codes.Unavailable:
			lastErr = err
		default:
			return err
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
	}
}

// acquireWithin takes a key not in exclude at once if there is one; otherwise, unless the only
// candidates cool down past the budget, it waits for any key as long as the budget allows.
func (c *Client) acquireWithin(ctx context.Context, pool string, cfg leaseConfig, exclude []string, deadline time.Time, pastBudget bool) (*Lease, error) {
	if len(exclude) > len(cfg.exclude) {
		l, err := c.acquire(ctx, pool, cfg, exclude, 0)
		if err == nil || pastBudget || ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE {
			return l, err
		}
	}
	return c.acquire(ctx, pool, cfg, cfg.exclude, max(min(cfg.wait, time.Until(deadline)), 0))
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
