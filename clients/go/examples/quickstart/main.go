// Quickstart leases a key of a pool and prints its label.
//
//	KEYMESH_ADDR=127.0.0.1:50051 go run ./examples/quickstart demo
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	keymesh "github.com/keymesh/keymesh/clients/go"
)

func main() {
	addr := os.Getenv("KEYMESH_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	pool := "demo"
	if len(os.Args) > 1 {
		pool = os.Args[1]
	}
	opts := []keymesh.Option{keymesh.WithInsecure()}
	if tok := os.Getenv("KEYMESH_TOKEN"); tok != "" {
		opts = append(opts, keymesh.WithBearerToken(tok))
	}
	client, err := keymesh.NewClient(addr, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	defer client.Close()

	err = client.WithLease(context.Background(), pool, func(ctx context.Context, l *keymesh.Lease) error {
		// Call the provider with l.Key here; returning nil releases the lease as a success.
		fmt.Println("leased", l.KeyLabel)
		return nil
	}, keymesh.WaitTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintf(os.Stderr, "quickstart: lease from pool %q: %v (reason %v)\n", pool, err, keymesh.ReasonOf(err))
		os.Exit(1)
	}
}
