package keymesh

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
)

// quickBackoff keeps the pauses between attempts short in tests.
func quickBackoff(c *leaseConfig) { c.backoffBase, c.backoffCap = time.Millisecond, 2*time.Millisecond }

// hourlyBackoff would make any pause outlast the budget: a retry that succeeds took none.
func hourlyBackoff(c *leaseConfig) { c.backoffBase, c.backoffCap = time.Hour, time.Hour }

func rateLimited(retryAfter string) error {
	return &openaiError{StatusCode: 429, Code: "rate_limit_exceeded", Response: response(429, map[string]string{"retry-after": retryAfter})}
}

func TestDoMovesToAnotherKeyAfterARateLimitWithoutBackingOff(t *testing.T) {
	f := newFakePool("a", "b")
	c := f.serve(t)
	var used []string
	err := c.Do(context.Background(), "p", func(_ context.Context, l *Lease) error {
		used = append(used, l.KeyID)
		if l.KeyID == "a" {
			return rateLimited("20")
		}
		return nil
	}, hourlyBackoff)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(used, []string{"a", "b"}) {
		t.Errorf("keys used = %v", used)
	}
	second := f.acquireRequests()[1]
	if !slices.Equal(second.GetExcludeKeyIds(), []string{"a"}) {
		t.Errorf("second acquire excluded %v", second.GetExcludeKeyIds())
	}
	if _, ok := f.nextEnd(t).(*keymeshv1.MarkRateLimitedRequest); !ok {
		t.Error("the rate-limited key was not reported")
	}
	if _, ok := f.nextEnd(t).(*keymeshv1.ReleaseRequest); !ok {
		t.Error("the successful lease was not released")
	}
}

func TestDoGivesUpWhenTheOnlyKeyCoolsPastTheBudget(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	var runs atomic.Int32
	start := time.Now()
	err := c.Do(context.Background(), "p", func(context.Context, *Lease) error {
		runs.Add(1)
		return rateLimited("60")
	}, RetryBudget(5*time.Second), quickBackoff)
	var oe *openaiError
	if !errors.As(err, &oe) || oe.StatusCode != 429 {
		t.Fatalf("err = %v, want the provider's 429", err)
	}
	if runs.Load() != 1 {
		t.Errorf("ran %d times", runs.Load())
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("waited %v for a key that cools down past the budget", elapsed)
	}
	for _, r := range f.acquireRequests()[1:] {
		if r.GetWaitTimeout().AsDuration() > 0 {
			t.Errorf("waited for a key: %v", r)
		}
	}
}

func TestDoWaitsForAnyKeyWhenTheRetryAfterFitsTheBudget(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	var runs atomic.Int32
	err := c.Do(context.Background(), "p", func(context.Context, *Lease) error {
		if runs.Add(1) == 1 {
			return rateLimited("1")
		}
		return nil
	}, RetryBudget(10*time.Second), quickBackoff)
	if err != nil {
		t.Fatal(err)
	}
	reqs := f.acquireRequests()
	last := reqs[len(reqs)-1]
	if len(last.GetExcludeKeyIds()) != 0 || last.GetWaitTimeout().AsDuration() <= 0 {
		t.Errorf("final acquire = %v, want a waiting acquire for any key", last)
	}
}

func TestDoRetriesOverloadsOnAnyKey(t *testing.T) {
	f := newFakePool("a")
	c := f.serve(t)
	var runs atomic.Int32
	err := c.Do(context.Background(), "p", func(context.Context, *Lease) error {
		if runs.Add(1) < 3 {
			return &anthropicError{StatusCode: 529, raw: `{"type":"error","error":{"type":"overloaded_error"}}`}
		}
		return nil
	}, quickBackoff)
	if err != nil || runs.Load() != 3 {
		t.Fatalf("err = %v after %d runs", err, runs.Load())
	}
	for _, r := range f.acquireRequests() {
		if len(r.GetExcludeKeyIds()) != 0 {
			t.Errorf("an overload excluded a key: %v", r)
		}
	}
}

func TestDoDoesNotRetryClientErrors(t *testing.T) {
	f := newFakePool("a", "b")
	c := f.serve(t)
	var runs atomic.Int32
	err := c.Do(context.Background(), "p", func(context.Context, *Lease) error {
		runs.Add(1)
		return &openaiError{StatusCode: 400, Code: "context_length_exceeded"}
	}, quickBackoff)
	if err == nil || runs.Load() != 1 {
		t.Fatalf("err = %v after %d runs", err, runs.Load())
	}
}

func TestFullJitterStaysWithinItsCeiling(t *testing.T) {
	for attempt := range 40 {
		for range 50 {
			d := fullJitter(100*time.Millisecond, 5*time.Second, attempt, rand.Float64)
			limit := min(5*time.Second, 100*time.Millisecond<<min(attempt, 20))
			if d < 0 || d >= limit {
				t.Fatalf("attempt %d: pause %v outside [0, %v)", attempt, d, limit)
			}
		}
	}
}
