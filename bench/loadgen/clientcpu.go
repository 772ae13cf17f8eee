package main

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"time"

	keymesh "github.com/keymesh/keymesh/clients/go"
	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ClientCPUResult is the Go client's CPU per operation in interleaved rounds: n scoped leases
// (WithLease with an empty body) and n bare pairs (the generated client's Acquire + Release with
// the same request), back to back, one caller.
type ClientCPUResult struct {
	N      int               `json:"n"`
	Rounds []ClientCPURounds `json:"rounds"`
}

type ClientCPURounds struct {
	ScopedUs float64 `json:"scoped_us"`
	BareUs   float64 `json:"bare_us"`
}

// processCPU is the CPU time (user + system, every thread) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runClientCPU(o options) (*ClientCPUResult, error) {
	c, err := keymesh.NewClient(o.addr, keymesh.WithInsecure())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx := context.Background()
	host, _ := os.Hostname()
	// The request WithLease sends: its default holder and wait.
	req := &keymeshv1.AcquireRequest{Pool: o.pool, Holder: host + "/" + strconv.Itoa(os.Getpid()), WaitTimeout: durationpb.New(30 * time.Second)}
	noop := func(context.Context, *keymesh.Lease) error { return nil }
	scoped := func(n int) error {
		for range n {
			if err := c.WithLease(ctx, o.pool, noop); err != nil {
				return err
			}
		}
		return nil
	}
	bare := func(n int) error {
		for range n {
			l, err := c.Acquire(ctx, req)
			if err != nil {
				return err
			}
			if _, err := c.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: l.GetLeaseId()}); err != nil {
				return err
			}
		}
		return nil
	}
	// Warm-up: the connection, the allocator, grpc's buffers.
	if err := scoped(o.ops / 4); err != nil {
		return nil, err
	}
	if err := bare(o.ops / 4); err != nil {
		return nil, err
	}
	out := &ClientCPUResult{N: o.ops}
	measure := func(run func(int) error, into *float64) error {
		t0 := processCPU()
		if err := run(o.ops); err != nil {
			return err
		}
		*into = float64((processCPU() - t0).Nanoseconds()) / 1e3 / float64(o.ops)
		return nil
	}
	for r := range o.rounds {
		var round ClientCPURounds
		order := []func() error{
			func() error { return measure(scoped, &round.ScopedUs) },
			func() error { return measure(bare, &round.BareUs) },
		}
		// The order alternates, so a drift in the machine's load favours neither.
		if r%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, run := range order {
			if err := run(); err != nil {
				return nil, err
			}
		}
		out.Rounds = append(out.Rounds, round)
	}
	return out, nil
}
