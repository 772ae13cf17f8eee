package keymesh

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RateLimit is a provider's view of a key's budget, read from its response headers (OpenAI
// x-ratelimit-*, Anthropic anthropic-ratelimit-*, retry-after). A nil field is unknown.
type RateLimit struct {
	RequestsRemaining *int64
	RequestsLimit     *int64
	RequestsReset     *time.Duration
	TokensRemaining   *int64
	TokensLimit       *int64
	TokensReset       *time.Duration
	RetryAfter        *time.Duration
}

// ParseRateLimit reads the rate-limit headers of a provider response. Header names are matched
// case-insensitively; now anchors absolute reset instants and HTTP dates.
func ParseRateLimit(h http.Header, now time.Time) RateLimit {
	var rl RateLimit
	rl.RequestsRemaining = firstInt(h, "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining")
	rl.RequestsLimit = firstInt(h, "x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit")
	rl.RequestsReset = firstReset(h, now, "x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset")
	rl.TokensRemaining = firstInt(h, "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-input-tokens-remaining")
	rl.TokensLimit = firstInt(h, "x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-input-tokens-limit")
	rl.TokensReset = firstReset(h, now, "x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-reset")
	rl.RetryAfter = parseRetryAfter(h, now)
	return rl
}

// Empty reports whether no budget field is known.
func (r RateLimit) Empty() bool {
	return r.RequestsRemaining == nil && r.RequestsLimit == nil && r.RequestsReset == nil &&
		r.TokensRemaining == nil && r.TokensLimit == nil && r.TokensReset == nil && r.RetryAfter == nil
}

// Proto is the wire form for Release and MarkRateLimited; nil when nothing is known.
func (r RateLimit) Proto() *keymeshv1.RateLimit {
	if r.Empty() {
		return nil
	}
	return &keymeshv1.RateLimit{
		RequestsRemaining: r.RequestsRemaining,
		RequestsLimit:     r.RequestsLimit,
		RequestsReset:     durationOrNil(r.RequestsReset),
		TokensRemaining:   r.TokensRemaining,
		TokensLimit:       r.TokensLimit,
		TokensReset:       durationOrNil(r.TokensReset),
	}
}

func durationOrNil(d *time.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(*d)
}

// headerValue looks a header up case-insensitively, also in maps not built with Header.Set.
func headerValue(h http.Header, name string) (string, bool) {
	if v, ok := h[http.CanonicalHeaderKey(name)]; ok && len(v) > 0 {
		return strings.TrimSpace(v[0]), true
	}
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return strings.TrimSpace(v[0]), true
		}
	}
	return "", false
}

func firstInt(h http.Header, names ...string) *int64 {
	for _, name := range names {
		v, ok := headerValue(h, name)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil
		}
		return &n
	}
	return nil
}

func firstReset(h http.Header, now time.Time, names ...string) *time.Duration {
	for _, name := range names {
		v, ok := headerValue(h, name)
		if !ok {
			continue
		}
		return parseReset(v, now)
	}
	return nil
}

// parseReset accepts a Go-style duration as OpenAI sends it ("6m0s", "20ms") or an RFC 3339
// instant as Anthropic sends it (relative to now, floored at zero).
func parseReset(v string, now time.Time) *time.Duration {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return truncMs(d)
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return truncMs(max(t.Sub(now), 0))
	}
	return nil
}

// parseRetryAfter reads retry-after-ms (which wins) or retry-after in seconds or as an HTTP date.
func parseRetryAfter(h http.Header, now time.Time) *time.Duration {
	if v, ok := headerValue(h, "retry-after-ms"); ok {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms <= 1e12 {
			return truncMs(time.Duration(ms * float64(time.Millisecond)))
		}
	}
	v, ok := headerValue(h, "retry-after")
	if !ok {
		return nil
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if !(secs >= 0 && secs <= 1e9) { // also rejects NaN
			return nil
		}
		return truncMs(time.Duration(secs * float64(time.Second)))
	}
	if t, err := http.ParseTime(v); err == nil {
		return truncMs(max(t.Sub(now), 0))
	}
	return nil
}

func truncMs(d time.Duration) *time.Duration {
	d = d.Truncate(time.Millisecond)
	return &d
}
