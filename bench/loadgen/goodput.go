package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	keymesh "github.com/keymesh/keymesh/clients/go"
	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GoodputResult is one scenario against the fake provider: Poisson arrivals at a fixed rate, each
// request allowed `budget` from its arrival (retries included) before it counts as a failure.
type GoodputResult struct {
	Scenario    string         `json:"scenario"`
	OfferedRPS  float64        `json:"offered_rps"`
	Seconds     float64        `json:"seconds"`
	Measured    float64        `json:"measured_seconds"`
	Requests    int64          `json:"requests"`
	Succeeded   int64          `json:"succeeded"`
	Failed      int64          `json:"failed"`
	FailedBy    map[string]int `json:"failed_by"`
	Attempts    int64          `json:"provider_calls"`
	RateLimited int64          `json:"rate_limited_answers"`
	// SuccessPerSec counts successes completed after the warm-up, over the measured seconds.
	SuccessPerSec float64 `json:"success_per_sec"`
	// TokensPerSec: the tokens those successes used (sized requests, -tokens-min/-tokens-max), per measured second.
	TokensPerSec float64 `json:"tokens_per_sec"`
	Latency      Latency `json:"latency"`
	// ClientCPUUsPerRequest is this process's CPU (the client and its HTTP calls) per request offered.
	ClientCPUUsPerRequest float64 `json:"client_cpu_us_per_request"`
}

var requestBody = []byte(`{"model":"fake-model","messages":[{"role":"user","content":"say hello"}]}`)

// work is one request's size: the tokens it may use (reserved through KeyMesh, checked by the provider)
// and the tokens it does use; zero for the fixed small request.
type work struct {
	estimate, actual int64
}

func (w work) body() []byte {
	if w.estimate == 0 {
		return requestBody
	}
	return fmt.Appendf(nil, `{"model":"fake-model","messages":[{"role":"user","content":"sized"}],"fake_tokens":{"estimate":%d,"actual":%d}}`, w.estimate, w.actual)
}

type providerAnswer struct {
	status     int
	header     http.Header
	retryAfter time.Duration
	// The usage a 200 reported (sized requests only).
	inputTokens, outputTokens int64
}

type provider struct {
	url         string
	http        *http.Client
	attempts    atomic.Int64
	rateLimited atomic.Int64
}

func (p *provider) call(ctx context.Context, key string, w work) (providerAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/chat/completions", bytes.NewReader(w.body()))
	if err != nil {
		return providerAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	p.attempts.Add(1)
	resp, err := p.http.Do(req)
	if err != nil {
		return providerAnswer{}, err
	}
	a := providerAnswer{status: resp.StatusCode, header: resp.Header}
	if w.estimate > 0 && resp.StatusCode == http.StatusOK {
		var answer struct {
			Usage struct {
				Prompt     int64 `json:"prompt_tokens"`
				Completion int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&answer); err == nil {
			a.inputTokens, a.outputTokens = answer.Usage.Prompt, answer.Usage.Completion
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		p.rateLimited.Add(1)
		if v, err := strconv.Atoi(resp.Header.Get("retry-after-ms")); err == nil {
			a.retryAfter = time.Duration(v) * time.Millisecond
		} else if v, err := strconv.Atoi(resp.Header.Get("retry-after")); err == nil {
			a.retryAfter = time.Duration(v) * time.Second
		}
	}
	return a, nil
}

var errBudget = errors.New("budget spent")

// dropOwnerHeader removes the keymesh-owner header a replica names a pool's owner in, so the client never
// learns the owner and a non-owner replica forwards every call it is given.
func dropOwnerHeader(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	for _, opt := range opts {
		switch opt := opt.(type) {
		case grpc.HeaderCallOption:
			opt.HeaderAddr.Delete("keymesh-owner")
		case grpc.TrailerCallOption:
			opt.TrailerAddr.Delete("keymesh-owner")
		}
	}
	return err
}

// sleepWithin waits d unless that passes the deadline.
func sleepWithin(d time.Duration, deadline time.Time) error {
	if time.Now().Add(d).After(deadline) {
		return errBudget
	}
	time.Sleep(d)
	return nil
}

// oneKey: every request uses the same key and waits out its retry-after on a 429.
func oneKey(p *provider, key string) func(ctx context.Context, deadline time.Time, w work) error {
	return func(ctx context.Context, deadline time.Time, w work) error {
		for {
			a, err := p.call(ctx, key, w)
			if err != nil {
				return err
			}
			switch a.status {
			case http.StatusOK:
				return nil
			case http.StatusTooManyRequests:
				if err := sleepWithin(a.retryAfter, deadline); err != nil {
					return fmt.Errorf("429: %w", err)
				}
			default:
				return fmt.Errorf("status %d", a.status)
			}
		}
	}
}

// roundRobin: requests take keys in turn from a shared counter; a 429 moves on to the next key at
// once, and when every key said 429 in a row it waits out the shortest retry-after.
func roundRobin(p *provider, keys []string) func(ctx context.Context, deadline time.Time, w work) error {
	var next atomic.Uint64
	return func(ctx context.Context, deadline time.Time, w work) error {
		for {
			shortest := time.Duration(-1)
			for range keys {
				key := keys[(next.Add(1)-1)%uint64(len(keys))]
				a, err := p.call(ctx, key, w)
				if err != nil {
					return err
				}
				switch a.status {
				case http.StatusOK:
					return nil
				case http.StatusTooManyRequests:
					if shortest < 0 || a.retryAfter < shortest {
						shortest = a.retryAfter
					}
				default:
					return fmt.Errorf("status %d", a.status)
				}
			}
			if err := sleepWithin(shortest, deadline); err != nil {
				return fmt.Errorf("429: %w", err)
			}
		}
	}
}

// throughKeyMesh: the Go client's Do helper leases a key, reports the provider's answer (429s become
// cooldowns, 2xx carry the remaining budget and the tokens used) and retries on another key within the
// budget. A sized request reserves its estimate.
func throughKeyMesh(p *provider, c *keymesh.Client, pool string) func(ctx context.Context, deadline time.Time, w work) error {
	return func(ctx context.Context, deadline time.Time, w work) error {
		remaining := time.Until(deadline)
		return c.Do(ctx, pool, func(ctx context.Context, l *keymesh.Lease) error {
			a, err := p.call(ctx, l.Key, w)
			if err != nil {
				return err
			}
			l.Report(a.status, a.header)
			if a.status == http.StatusOK && w.estimate > 0 {
				l.SetUsage(a.inputTokens, a.outputTokens)
			}
			return nil
		}, keymesh.RetryBudget(remaining), keymesh.WaitTimeout(remaining), keymesh.Holder("bench-goodput"), keymesh.EstimatedTokens(w.estimate))
	}
}

// throughKeyMeshRPCs: the lease loop with the raw RPCs and no client-side backoff: Acquire (waiting),
// call, then Release with the provider's budget or MarkRateLimited with its retry-after, and on a 429
// straight back to Acquire. It separates the server's key choice from the helper's retry policy.
func throughKeyMeshRPCs(p *provider, c *keymesh.Client, pool string) func(ctx context.Context, deadline time.Time, w work) error {
	return func(ctx context.Context, deadline time.Time, w work) error {
		for {
			wait := time.Until(deadline)
			if wait <= 0 {
				return errBudget
			}
			lease, err := c.Acquire(ctx, &keymeshv1.AcquireRequest{Pool: pool, Holder: "bench-goodput", WaitTimeout: durationpb.New(wait)})
			if err != nil {
				return err
			}
			a, err := p.call(ctx, lease.GetKey(), w)
			if err != nil {
				_, _ = c.MarkFailed(context.WithoutCancel(ctx), &keymeshv1.MarkFailedRequest{LeaseId: lease.GetLeaseId(), HttpStatus: 0, Message: "no response"})
				return err
			}
			o := keymesh.Classify(a.status, a.header, nil)
			switch o.Kind {
			case keymesh.Success:
				_, err = c.Release(context.WithoutCancel(ctx), &keymeshv1.ReleaseRequest{LeaseId: lease.GetLeaseId(), RateLimit: o.RateLimit.Proto()})
				return err
			case keymesh.RateLimited:
				req := &keymeshv1.MarkRateLimitedRequest{LeaseId: lease.GetLeaseId(), RateLimit: o.RateLimit.Proto()}
				if o.RateLimit.RetryAfter != nil {
					req.RetryAfter = durationpb.New(*o.RateLimit.RetryAfter)
				}
				if _, err := c.MarkRateLimited(context.WithoutCancel(ctx), req); err != nil {
					return err
				}
			default:
				_, _ = c.MarkFailed(context.WithoutCancel(ctx), &keymeshv1.MarkFailedRequest{LeaseId: lease.GetLeaseId(), HttpStatus: int32(a.status)})
				return fmt.Errorf("status %d", a.status)
			}
		}
	}
}

func failureCause(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errBudget) || errors.Is(err, context.DeadlineExceeded):
		if strings.Contains(msg, "429") {
			return "rate_limited_past_budget"
		}
		return "budget_spent"
	case strings.Contains(msg, "rate_limited"):
		return "rate_limited"
	case strings.Contains(msg, "NO_KEY_AVAILABLE") || strings.Contains(msg, "no key"):
		return "no_key_available"
	}
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}

func runGoodput(o options) (*GoodputResult, error) {
	if o.provider == "" || o.rate <= 0 {
		return nil, fmt.Errorf("-provider and -rate are required")
	}
	p := &provider{url: o.provider, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0}}}
	keys := strings.Split(o.keys, ",")
	var do func(ctx context.Context, deadline time.Time, w work) error
	switch o.scenario {
	case "one":
		do = oneKey(p, keys[0])
	case "rr":
		do = roundRobin(p, keys)
	case "keymesh", "keymesh-rpc":
		opts := []keymesh.Option{keymesh.WithInsecure()}
		if o.ownerBlind {
			opts = append(opts, keymesh.WithDialOptions(grpc.WithChainUnaryInterceptor(dropOwnerHeader)))
		}
		c, err := keymesh.NewClient(o.addr, opts...)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		if o.scenario == "keymesh" {
			do = throughKeyMesh(p, c, o.pool)
		} else {
			do = throughKeyMeshRPCs(p, c, o.pool)
		}
	default:
		return nil, fmt.Errorf("unknown -scenario %q", o.scenario)
	}

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		requests  int64
		succeeded int64
		failed    int64
		counted   int64
		tokens    int64
		failedBy  = map[string]int{}
		latencies []time.Duration
	)
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	// Sized requests: an estimate uniform in [min, max] tokens, of which 60-100% is used.
	size := func() work {
		if o.tokensMax <= 0 {
			return work{}
		}
		estimate := o.tokensMin + rng.Int64N(o.tokensMax-o.tokensMin+1)
		return work{estimate: estimate, actual: max(1, int64(float64(estimate)*(0.6+0.4*rng.Float64())))}
	}
	if o.drain > 0 {
		return drainBuckets(o, p, do, size), nil
	}
	cpu0 := processCPU()
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)
	for at := start; ; {
		at = at.Add(time.Duration(rng.ExpFloat64() / o.rate * float64(time.Second)))
		if at.After(end) {
			break
		}
		time.Sleep(time.Until(at))
		requests++
		wg.Add(1)
		w := size()
		go func(arrival time.Time) {
			defer wg.Done()
			deadline := arrival.Add(o.budget)
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			err := do(ctx, deadline, w)
			cancel()
			done := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err == nil && !done.After(deadline) {
				succeeded++
				latencies = append(latencies, done.Sub(arrival))
				if !done.Before(measureFrom) && !done.After(end) {
					counted++
					tokens += w.actual
				}
				return
			}
			failed++
			if err == nil {
				err = errBudget
			}
			failedBy[failureCause(err)]++
		}(at)
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	measured := o.duration.Seconds()
	return &GoodputResult{
		Scenario:      o.scenario,
		OfferedRPS:    o.rate,
		Seconds:       (o.warmup + o.duration).Seconds(),
		Measured:      measured,
		Requests:      requests,
		Succeeded:     succeeded,
		Failed:        failed,
		FailedBy:      failedBy,
		Attempts:      p.attempts.Load(),
		RateLimited:   p.rateLimited.Load(),
		SuccessPerSec: float64(counted) / measured,
		TokensPerSec:  float64(tokens) / measured,
		Latency:       summarize(latencies),

		ClientCPUUsPerRequest: float64(cpu.Nanoseconds()) / 1e3 / float64(max(requests, 1)),
	}, nil
}

// drainBuckets sends o.drain requests back to back from 64 callers and reports them: run before a
// scenario, it empties the keys' buckets on both sides, so the measured run meets the budgets' refill
// rate rather than their first burst.
func drainBuckets(o options, p *provider, do func(ctx context.Context, deadline time.Time, w work) error, size func() work) *GoodputResult {
	var (
		next, succeeded, failed atomic.Int64
		wg                      sync.WaitGroup
		mu                      sync.Mutex
	)
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(o.drain) {
				mu.Lock()
				w := size()
				mu.Unlock()
				// The budget bounds the wait for a key; the call itself gets a second more, so a lease granted
				// late is not cut off mid-call and reported as the key's failure (which opens its circuit).
				deadline := time.Now().Add(o.budget)
				ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
				if err := do(ctx, deadline, w); err == nil {
					succeeded.Add(1)
				} else {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	return &GoodputResult{
		Scenario:    o.scenario,
		Seconds:     time.Since(start).Seconds(),
		Requests:    int64(o.drain),
		Succeeded:   succeeded.Load(),
		Failed:      failed.Load(),
		FailedBy:    map[string]int{},
		Attempts:    p.attempts.Load(),
		RateLimited: p.rateLimited.Load(),
	}
}
