// openai_style sends chat completions to an OpenAI-style endpoint with KeyMesh-leased keys: the
// key goes in a per-request Authorization header, the response status and headers are reported
// with Lease.Report, and Do retries a 429 on another key.
//
//	go run ./examples/openai_style -pool openai -base-url http://127.0.0.1:8787/v1 -requests 20
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	keymesh "github.com/keymesh/keymesh/clients/go"
)

func main() {
	addr := flag.String("addr", envOr("KEYMESH_ADDR", "127.0.0.1:50051"), "KeyMesh gRPC address")
	pool := flag.String("pool", "openai", "pool to lease keys from")
	baseURL := flag.String("base-url", os.Getenv("OPENAI_BASE_URL"), "OpenAI-style API base URL (default: the key's base_url metadata)")
	requests := flag.Int("requests", 1, "how many completions to send")
	flag.Parse()

	opts := []keymesh.Option{keymesh.WithInsecure()}
	if tok := os.Getenv("KEYMESH_TOKEN"); tok != "" {
		opts = append(opts, keymesh.WithBearerToken(tok))
	}
	client, err := keymesh.NewClient(*addr, opts...)
	if err != nil {
		fail(err)
	}
	defer client.Close()

	httpClient := &http.Client{Timeout: 30 * time.Second}
	keysUsed := map[string]int{}
	for i := range *requests {
		err := client.Do(context.Background(), *pool, func(ctx context.Context, l *keymesh.Lease) error {
			answer, err := complete(ctx, httpClient, l, *baseURL, fmt.Sprintf("hello %d", i))
			if err == nil {
				keysUsed[l.KeyLabel]++
				fmt.Println(l.KeyLabel, "→", answer)
			}
			return err
		}, keymesh.RetryBudget(20*time.Second))
		if err != nil {
			fail(err)
		}
	}
	fmt.Println("completed", *requests, "requests with keys", keysUsed)
}

// complete sends one chat completion with the leased key and reports the outcome on the lease.
func complete(ctx context.Context, hc *http.Client, l *keymesh.Lease, baseURL, prompt string) (string, error) {
	if baseURL == "" {
		baseURL = l.Metadata["base_url"]
	}
	body, _ := json.Marshal(map[string]any{
		"model":    "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": prompt}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+l.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err // no response: classified as transient
	}
	defer resp.Body.Close()
	l.Report(resp.StatusCode, resp.Header) // status and x-ratelimit-* headers decide the outcome
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("provider answered %s", resp.Status) // the report decides; Do retries on another key
	}
	var completion struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&completion); err != nil {
		return "", err
	}
	l.SetUsage(completion.Usage.PromptTokens, completion.Usage.CompletionTokens)
	if len(completion.Choices) == 0 {
		return "", nil
	}
	return completion.Choices[0].Message.Content, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "openai_style:", err, "reason:", keymesh.ReasonOf(err))
	os.Exit(1)
}
