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
// (RetryBudget, default 30s), by the rules of test/vectors/retry.json. A rate limit, an auth or
// quota failure or a transient error moves at once, with no pause, to another key
// (exclude_key_ids). When no other key is eligible, and after an overload (provider-wide, so the
// same key will do), it pauses — full jitter, and at least the provider's retry-after after an
// overload or a transient failure — then waits for any key: the server keeps a rate-limited key
// cooling until its retry-after, so a rate limit whose retry-after ends past the budget gives up at
// once. Client errors are not retried. It returns nil on success, otherwise the last error.
func (c *Client) Do(ctx context.Context, pool string, fn func(ctx context.Context, l *Lease) error, opts ...LeaseOption) error {
	cfg := newLeaseConfig(opts)
	return retryLoop(clientSteps{c: c, ctx: ctx, pool: pool, fn: fn, cfg: cfg}, retryPolicy{
		budget: cfg.budget, wait: cfg.wait, exclude: cfg.exclude, backoffBase: cfg.backoffBase, backoffCap: cfg.backoffCap,
	})
}

// retryPolicy is the retry loop's policy, in the terms of test/vectors/retry.json.
type retryPolicy struct {
	budget, wait            time.Duration
	exclude                 []string
	backoffBase, backoffCap time.Duration
}

// retrySteps is what the retry loop does to the world; tests give fakes.
type retrySteps interface {
	acquire(exclude []string, wait time.Duration) (*Lease, error)
	// run calls fn under the lease and ends the lease; the error is the call's failure (nil: success).
	run(l *Lease) (Outcome, error)
	now() time.Time
	// sleep pauses; an error means the caller gave up.
	sleep(d time.Duration) error
	random() float64
}

type clientSteps struct {
	c    *Client
	ctx  context.Context
	pool string
	fn   func(ctx context.Context, l *Lease) error
	cfg  leaseConfig
}

func (s clientSteps) acquire(exclude []string, wait time.Duration) (*Lease, error) {
	return s.c.acquire(s.ctx, s.pool, s.cfg, exclude, wait)
}

func (s clientSteps) run(l *Lease) (Outcome, error) {
	o, err := s.c.run(s.ctx, l, s.fn, s.cfg)
	if err != nil && s.ctx.Err() != nil {
		o.Kind = ClientError // the caller gave up: no retry
	}
	return o, err
}

func (s clientSteps) now() time.Time  { return time.Now() }
func (s clientSteps) random() float64 { return rand.Float64() }
func (s clientSteps) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return s.ctx.Err()
	case <-t.C:
		return nil
	}
}

func retryLoop(s retrySteps, p retryPolicy) error {
	deadline := s.now().Add(p.budget)
	exclude := slices.Clone(p.exclude)
	waitForAny := func() (*Lease, error) {
		return s.acquire(p.exclude, max(min(p.wait, deadline.Sub(s.now())), 0))
	}
	var lastErr error
	pauses := 0
	l, err := waitForAny()
	for {
		var floor time.Duration
		if err != nil {
			switch {
			case lastErr != nil && ReasonOf(err) == keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE:
				return lastErr
			case status.Code(err) != codes.Unavailable:
				return err
			}
			lastErr = err
		} else {
			outcome, runErr := s.run(l)
			if runErr == nil {
				return nil
			}
			lastErr = runErr
			if !outcome.Retryable() {
				return runErr
			}
			ra := outcome.RateLimit.RetryAfter
			if outcome.Kind != Overloaded {
				if !slices.Contains(exclude, l.KeyID) {
					exclude = append(exclude, l.KeyID)
				}
				// Another key needs no pause.
				if l, err = s.acquire(exclude, 0); err == nil || ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE {
					continue
				}
				if outcome.Kind == RateLimited && ra != nil && s.now().Add(*ra).After(deadline) {
					return runErr
				}
			}
			// The server holds a rate-limited key back itself; after these the provider's word is the floor.
			if (outcome.Kind == Overloaded || outcome.Kind == Transient) && ra != nil {
				floor = *ra
			}
		}
		pause := max(fullJitter(p.backoffBase, p.backoffCap, pauses, s.random), floor)
		if s.now().Add(pause).After(deadline) {
			return lastErr
		}
		if serr := s.sleep(pause); serr != nil {
			return errors.Join(lastErr, serr)
		}
		pauses++
		l, err = waitForAny()
	}
}

// fullJitter is a random pause in [0, min(ceiling, base·2^attempt)) ("full jitter").
func fullJitter(base, ceiling time.Duration, attempt int, random func() float64) time.Duration {
	d := ceiling
	if attempt < 30 {
		d = min(ceiling, base<<attempt)
	}
	if d <= 0 {
		return 0
	}
	return time.Duration(random() * float64(d))
}
