package keymesh

import (
	"math/big"
	"net/http"
	"regexp"
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

// ParseRateLimit reads the rate-limit headers of a provider response, following
// test/vectors/README.md: names are case-insensitive, per field the first present and parseable
// source wins (OpenAI, then Anthropic, then Anthropic input-tokens), and now anchors absolute
// reset instants and HTTP dates.
func ParseRateLimit(h http.Header, now time.Time) RateLimit {
	return RateLimit{
		RequestsRemaining: firstCount(h, "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
		RequestsLimit:     firstCount(h, "x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"),
		RequestsReset:     firstReset(h, now, "x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset"),
		TokensRemaining:   firstCount(h, "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-input-tokens-remaining"),
		TokensLimit:       firstCount(h, "x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-input-tokens-limit"),
		TokensReset:       firstReset(h, now, "x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-reset"),
		RetryAfter:        parseRetryAfter(h, now),
	}
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
		return strings.Trim(v[0], asciiSpace), true
	}
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return strings.Trim(v[0], asciiSpace), true
		}
	}
	return "", false
}

const asciiSpace = " \t\r\n\v\f"

var (
	countPattern    = regexp.MustCompile(`^[0-9]+$`)
	decimalPattern  = regexp.MustCompile(`^([0-9]+)(?:\.([0-9]+))?$`)
	durationPattern = regexp.MustCompile(`^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$`)
	durationPart    = regexp.MustCompile(`([0-9]+)(?:\.([0-9]+))?(h|ms|m|s|us|µs|ns)`)
	unitNanos       = map[string]int64{"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "µs": 1e3, "ns": 1}
	// RFC 3339 as every client reads it: '.' fractions only, offsets within ±23:59 (time.Parse takes
	// a ',' fraction and a +24:00 offset); the value is upper-cased first, as 't' and 'z' are allowed.
	rfc3339Pattern = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)
	// IMF-fixdate with its names in their case (time.Parse matches them case-insensitively).
	imfFixdatePattern = regexp.MustCompile(`^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$`)
)

// maxCount is the largest count every client can hold (JavaScript's safe integers).
const maxCount = 1<<53 - 1

func firstCount(h http.Header, names ...string) *int64 {
	for _, name := range names {
		v, ok := headerValue(h, name)
		if !ok || !countPattern.MatchString(v) {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n <= maxCount {
			return &n
		}
	}
	return nil
}

// firstReset reads OpenAI resets as Go-style durations and Anthropic resets as RFC 3339 instants.
func firstReset(h http.Header, now time.Time, names ...string) *time.Duration {
	for _, name := range names {
		v, ok := headerValue(h, name)
		if !ok {
			continue
		}
		var d *time.Duration
		if strings.HasPrefix(name, "x-ratelimit-") {
			d = parseGoDuration(v)
		} else {
			d = parseInstant(v, now)
		}
		if d != nil {
			return d
		}
	}
	return nil
}

// parseGoDuration sums "1h2m3.5s"-style components exactly and truncates to milliseconds.
func parseGoDuration(v string) *time.Duration {
	if v == "0" {
		return msDuration(new(big.Rat))
	}
	if !durationPattern.MatchString(v) {
		return nil
	}
	total := new(big.Rat)
	for _, m := range durationPart.FindAllStringSubmatch(v, -1) {
		total.Add(total, decimal(m[1], m[2], unitNanos[m[3]]))
	}
	return msDuration(total)
}

func parseInstant(v string, now time.Time) *time.Duration {
	v = strings.ToUpper(v)
	if !rfc3339Pattern.MatchString(v) {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil
	}
	return truncMs(max(t.Sub(now), 0))
}

// decimal is intPart.fracPart (digits only) times unit nanoseconds, exactly.
func decimal(intPart, fracPart string, unit int64) *big.Rat {
	r, _ := new(big.Rat).SetString(intPart + "." + fracPart + "0")
	return r.Mul(r, new(big.Rat).SetInt64(unit))
}

// msDuration truncates a non-negative nanosecond count to whole milliseconds; nil on overflow.
func msDuration(nanos *big.Rat) *time.Duration {
	ms := new(big.Int).Quo(nanos.Num(), new(big.Int).Mul(nanos.Denom(), big.NewInt(1e6)))
	if !ms.IsInt64() || ms.Int64() > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return nil
	}
	d := time.Duration(ms.Int64()) * time.Millisecond
	return &d
}

// parseRetryAfter reads retry-after-ms (which wins when it parses) or retry-after in decimal
// seconds or as an HTTP date.
func parseRetryAfter(h http.Header, now time.Time) *time.Duration {
	if v, ok := headerValue(h, "retry-after-ms"); ok {
		if m := decimalPattern.FindStringSubmatch(v); m != nil {
			return msDuration(decimal(m[1], m[2], 1e6))
		}
	}
	v, ok := headerValue(h, "retry-after")
	if !ok {
		return nil
	}
	if m := decimalPattern.FindStringSubmatch(v); m != nil {
		return msDuration(decimal(m[1], m[2], 1e9))
	}
	if !imfFixdatePattern.MatchString(v) {
		return nil
	}
	if t, err := time.Parse(http.TimeFormat, v); err == nil {
		return truncMs(max(t.Sub(now), 0))
	}
	return nil
}

func truncMs(d time.Duration) *time.Duration {
	d = d.Truncate(time.Millisecond)
	return &d
}
