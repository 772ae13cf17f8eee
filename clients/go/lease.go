package keymesh

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Lease is a key lent by KeyMesh for the duration of a WithLease call. Use Key with the
// provider's SDK; never log it (String and GoString leave it out).
type Lease struct {
	LeaseID  string
	Pool     string
	Key      string
	KeyID    string
	KeyLabel string
	// Metadata is the key's metadata for the SDK, e.g. base_url or organization.
	Metadata map[string]string

	mu       sync.Mutex
	deadline time.Time     // local clock: when the lease ends unless renewed
	renew    time.Duration // server-recommended renewal interval
	gone     *LeaseGoneError
	reported *Outcome
	usage    *keymeshv1.Usage
}

// LeaseGoneError is the cause of the context passed to fn when the lease ended early: revoked by
// an operator, its key disabled or removed, or no renewal succeeded before it expired.
type LeaseGoneError struct {
	Reason  keymeshv1.ErrorReason
	Message string
}

func (e *LeaseGoneError) Error() string {
	return "keymesh: lease gone: " + e.Reason.String() + ": " + e.Message
}

func (l *Lease) String() string   { return "keymesh.Lease{" + l.LeaseID + " key " + l.KeyLabel + "}" }
func (l *Lease) GoString() string { return l.String() }

// Revoked reports whether the server ended the lease while fn was running (the ctx passed to fn
// is then cancelled with a *LeaseGoneError cause).
func (l *Lease) Revoked() bool { return l.Gone() != nil }

// Gone returns why the lease ended early, or nil while it is alive.
func (l *Lease) Gone() *LeaseGoneError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gone
}

// Report sets the outcome of the provider call explicitly from its HTTP status and headers; it
// wins over classifying fn's error. With a 2xx it carries the provider's budget to Release.
func (l *Lease) Report(status int, header http.Header) {
	o := Classify(status, header, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reported = &o
}

// SetUsage records the tokens the call consumed; sent with Release.
func (l *Lease) SetUsage(inputTokens, outputTokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.usage = &keymeshv1.Usage{InputTokens: inputTokens, OutputTokens: outputTokens}
}

// ExpiresAt is when the lease ends unless renewed, on the local clock.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

func (l *Lease) renewed(ttl, interval time.Duration, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = at.Add(ttl)
	if interval > 0 {
		l.renew = interval
	}
}

// renewInterval is the server's recommended renewal interval (0: none recommended).
func (l *Lease) renewInterval() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renew
}

// end records the first reason the lease ended; later ones are ignored.
func (l *Lease) end(g *LeaseGoneError) *LeaseGoneError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone == nil {
		l.gone = g
	}
	return l.gone
}

// LeaseOption configures WithLease and Do.
type LeaseOption func(*leaseConfig)

type leaseConfig struct {
	wait            time.Duration
	ttl             time.Duration
	holder          string
	estimatedTokens int64
	exclude         []string
	budget          time.Duration
	backoffBase     time.Duration
	backoffCap      time.Duration
}

// WaitTimeout is how long Acquire waits for a key when none is eligible (default 30s).
func WaitTimeout(d time.Duration) LeaseOption { return func(c *leaseConfig) { c.wait = d } }

// TTL is the requested lease time to live (default: the pool's); renewals ask for the same.
func TTL(d time.Duration) LeaseOption { return func(c *leaseConfig) { c.ttl = d } }

// Holder describes the borrower in lease listings (default "<hostname>/<pid>").
func Holder(h string) LeaseOption { return func(c *leaseConfig) { c.holder = h } }

// EstimatedTokens lets the server skip keys whose known token budget is lower.
func EstimatedTokens(n int64) LeaseOption { return func(c *leaseConfig) { c.estimatedTokens = n } }

// ExcludeKeys names keys not to lend.
func ExcludeKeys(ids ...string) LeaseOption {
	return func(c *leaseConfig) { c.exclude = append(c.exclude, ids...) }
}

// RetryBudget is the total time Do may spend on attempts and backoff (default 30s).
func RetryBudget(d time.Duration) LeaseOption { return func(c *leaseConfig) { c.budget = d } }

// defaultHolder is "<hostname>/<pid>", looked up once.
var defaultHolder = sync.OnceValue(func() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
})

func newLeaseConfig(opts []LeaseOption) leaseConfig {
	cfg := leaseConfig{
		wait:        30 * time.Second,
		holder:      defaultHolder(),
		budget:      30 * time.Second,
		backoffBase: 100 * time.Millisecond,
		backoffCap:  5 * time.Second,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// finalReportTimeout bounds the report that ends a lease, which runs even when ctx is cancelled;
// it outlasts a replica's failover.
const finalReportTimeout = 15 * time.Second

// WithLease borrows a key of pool, runs fn with it and ends the lease. While fn runs the lease is
// renewed over a KeepAlive stream; if the server revokes it or renewal fails for good, the ctx
// passed to fn is cancelled and l.Revoked() turns true. When fn returns, the outcome is reported:
// nil is a success (Release with the measured latency), an error is classified (Classify) and
// reported as a rate limit or failure, and a Lease.Report call wins over both. The lease is
// ended also when ctx is cancelled. WithLease returns fn's error; when fn returned nil it returns
// a *ProviderError for a failure set with Report. A final report that fails does not change the
// result (the work is done; the server reclaims the lease at its expiry): it is logged.
func (c *Client) WithLease(ctx context.Context, pool string, fn func(ctx context.Context, l *Lease) error, opts ...LeaseOption) error {
	cfg := newLeaseConfig(opts)
	l, err := c.acquire(ctx, pool, cfg, cfg.exclude, cfg.wait)
	if err != nil {
		return err
	}
	_, err = c.run(ctx, l, fn, cfg)
	return err
}

func (c *Client) acquire(ctx context.Context, pool string, cfg leaseConfig, exclude []string, wait time.Duration) (*Lease, error) {
	req := &keymeshv1.AcquireRequest{
		Pool:            pool,
		Holder:          cfg.holder,
		EstimatedTokens: cfg.estimatedTokens,
		ExcludeKeyIds:   exclude,
	}
	if wait > 0 {
		req.WaitTimeout = durationpb.New(wait)
	}
	if cfg.ttl > 0 {
		req.LeaseTtl = durationpb.New(cfg.ttl)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+c.defaultTimeout)
		defer cancel()
	}
	resp, err := c.Acquire(ctx, req)
	if err != nil {
		return nil, err
	}
	l := &Lease{
		LeaseID:  resp.GetLeaseId(),
		Pool:     resp.GetPool(),
		Key:      resp.GetKey(),
		KeyID:    resp.GetKeyId(),
		KeyLabel: resp.GetKeyLabel(),
		Metadata: resp.GetKeyMetadata(),
	}
	l.renewed(resp.GetTtl().AsDuration(), resp.GetRenewInterval().AsDuration(), time.Now())
	return l, nil
}

// run executes fn under an acquired lease and ends it; it returns the outcome it reported.
func (c *Client) run(ctx context.Context, l *Lease, fn func(context.Context, *Lease) error, cfg leaseConfig) (outcome Outcome, err error) {
	leaseCtx, cancel := context.WithCancelCause(ctx)
	stopKeeping := c.keeper.keep(l, cfg.ttl, func(g *LeaseGoneError) { cancel(l.end(g)) })
	start := time.Now()
	stop := func() {
		stopKeeping()
		cancel(context.Canceled)
	}
	defer func() {
		if p := recover(); p != nil {
			stop()
			_ = c.report(ctx, l, Outcome{Kind: ClientError, Message: "holder panicked"}, 0)
			panic(p)
		}
	}()
	fnErr := fn(leaseCtx, l)
	latency := time.Since(start)
	stop()

	l.mu.Lock()
	reported := l.reported
	l.mu.Unlock()
	switch {
	case reported != nil:
		outcome = *reported
	case fnErr == nil:
		outcome = Outcome{Kind: Success}
	default:
		outcome = Classify(0, nil, fnErr)
		if outcome.Message == "" {
			outcome.Message = fnErr.Error()
		}
	}
	outcome.Message = redact(outcome.Message, l.Key)
	if err := c.report(ctx, l, outcome, latency); err != nil && !leaseEnded(err) {
		// The call's own result stands; the server reclaims the lease at its expiry.
		c.log.Warn("keymesh: could not end lease", "pool", l.Pool, "key_id", l.KeyID, "outcome", outcome.Kind, "error", err)
	}
	switch {
	case fnErr != nil:
		return outcome, fnErr
	case outcome.Kind != Success:
		return outcome, &ProviderError{Outcome: outcome}
	}
	return outcome, nil
}

// report ends the lease with its outcome, on a fresh context so a cancelled caller still ends it;
// the call is about the lease's pool, so it goes to that pool's owner.
func (c *Client) report(ctx context.Context, l *Lease, o Outcome, latency time.Duration) error {
	ctx, cancel := context.WithTimeout(withPool(context.WithoutCancel(ctx), l.Pool), finalReportTimeout)
	defer cancel()
	var lat *durationpb.Duration
	if latency > 0 {
		lat = durationpb.New(latency)
	}
	var err error
	switch o.Kind {
	case Success:
		l.mu.Lock()
		usage := l.usage
		l.mu.Unlock()
		_, err = c.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: l.LeaseID, Latency: lat, Usage: usage, RateLimit: o.RateLimit.Proto()})
	case RateLimited:
		_, err = c.MarkRateLimited(ctx, &keymeshv1.MarkRateLimitedRequest{
			LeaseId: l.LeaseID, RetryAfter: durationOrNil(o.RateLimit.RetryAfter), RateLimit: o.RateLimit.Proto(),
		})
	default:
		_, err = c.MarkFailed(ctx, &keymeshv1.MarkFailedRequest{
			LeaseId: l.LeaseID, Reason: o.Kind.FailureReason(), HttpStatus: int32(o.HTTPStatus),
			Message: truncate(o.Message, 200), Latency: lat,
		})
	}
	return err
}

// redact removes the key from a message bound for the server.
func redact(msg, key string) string {
	if key == "" {
		return msg
	}
	return strings.ReplaceAll(msg, key, "[key]")
}

// truncate cuts s to at most n bytes of valid UTF-8 (proto strings must be valid UTF-8).
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}
