package keymesh_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	keymesh "github.com/keymesh/keymesh/clients/go"
	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
)

func ExampleNewClient() {
	// Plaintext to a local server; a bearer token over plaintext is allowed to loopback only.
	local, err := keymesh.NewClient("127.0.0.1:50051", keymesh.WithInsecure(), keymesh.WithBearerToken("dev-token"))
	if err != nil {
		log.Fatal(err)
	}
	defer local.Close()

	// TLS (system roots) to a remote one, with a deadline on every unary call.
	remote, err := keymesh.NewClient("keymesh.example.com:443",
		keymesh.WithTLS(&tls.Config{MinVersion: tls.VersionTLS13}),
		keymesh.WithBearerToken("prod-token"),
		keymesh.WithDefaultTimeout(3*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer remote.Close()
}

func ExampleClient_WithLease() {
	client, _ := keymesh.NewClient("127.0.0.1:50051", keymesh.WithInsecure())
	defer client.Close()

	err := client.WithLease(context.Background(), "openai", func(ctx context.Context, l *keymesh.Lease) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.Metadata["base_url"]+"/chat/completions", nil)
		req.Header.Set("Authorization", "Bearer "+l.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err // no response: reported as transient
		}
		defer resp.Body.Close()
		l.Report(resp.StatusCode, resp.Header) // 429 → MarkRateLimited with retry-after, 2xx → Release
		l.SetUsage(120, 40)
		return nil
	}, keymesh.WaitTimeout(5*time.Second), keymesh.TTL(30*time.Second))
	if keymesh.ReasonOf(err) == keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE {
		wait, _ := keymesh.RetryAfter(err)
		log.Printf("no key free; one expected in %v", wait)
	}
}

func ExampleClient_Do() {
	client, _ := keymesh.NewClient("127.0.0.1:50051", keymesh.WithInsecure())
	defer client.Close()

	// A 429 or 5xx moves to another key; the whole thing gives up after 20s.
	err := client.Do(context.Background(), "anthropic", func(ctx context.Context, l *keymesh.Lease) error {
		return callProvider(ctx, l.Key)
	}, keymesh.RetryBudget(20*time.Second))
	if err != nil {
		log.Print(err)
	}
}

func callProvider(context.Context, string) error { return nil }

func ExampleClassify() {
	h := http.Header{}
	h.Set("Retry-After", "20")
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	o := keymesh.Classify(http.StatusTooManyRequests, h, nil)
	fmt.Println(o.Kind, *o.RateLimit.RetryAfter, *o.RateLimit.RequestsRemaining)

	fmt.Println(keymesh.Classify(0, nil, fmt.Errorf("call: %w", context.DeadlineExceeded)).Kind)
	// Output:
	// rate_limited 20s 0
	// transient
}

func ExampleParseRateLimit() {
	h := http.Header{}
	h.Set("anthropic-ratelimit-requests-remaining", "49")
	h.Set("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rl := keymesh.ParseRateLimit(h, now)
	fmt.Println(*rl.RequestsRemaining, *rl.RequestsReset)
	// Output: 49 30s
}

func ExampleReasonOf() {
	client, _ := keymesh.NewClient("127.0.0.1:50051", keymesh.WithInsecure())
	defer client.Close()
	_, err := client.Release(context.Background(), &keymeshv1.ReleaseRequest{LeaseId: "lk1.old.lease"})
	switch keymesh.ReasonOf(err) {
	case keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED, keymeshv1.ErrorReason_ERROR_REASON_LEASE_RELEASED:
		// Already over: nothing to do.
	default:
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Print(err)
		}
	}
}
