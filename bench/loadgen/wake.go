package main

import (
	"context"
	"fmt"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// WakeResult is the time from sending a Release to the return of an Acquire that was queued behind
// it, over loopback, on a pool whose only key has max_concurrency 1, beside the round trips it is held
// against.
type WakeResult struct {
	Samples int     `json:"samples"`
	Wake    Latency `json:"wake"`
	// ReleaseRTT is the round trip of the Release that wakes the waiter.
	ReleaseRTT Latency `json:"release_rtt"`
	// ReleaseBeforeRTT is a Release round trip with nobody waiting, of the same key just before each
	// wake-up (released, then acquired again): the wake-up's yardstick.
	ReleaseBeforeRTT Latency `json:"release_before_rtt"`
	// EchoRTT is a bare echo round trip sent just before each Release: the transport's own floor in the same state.
	EchoRTT Latency `json:"echo_rtt"`
}

func runWake(o options) (*WakeResult, error) {
	conn, err := dial(o.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	pool := keymeshv1.NewKeyPoolServiceClient(conn)
	admin := keymeshv1.NewPoolAdminServiceClient(conn)
	ctx := context.Background()
	acquire := func(wait time.Duration) (*keymeshv1.AcquireResponse, error) {
		return pool.Acquire(ctx, &keymeshv1.AcquireRequest{Pool: o.pool, Holder: "bench-wake", WaitTimeout: durationpb.New(wait)})
	}

	type woken struct {
		at    time.Time
		lease string
		err   error
	}
	wakes := make([]time.Duration, 0, o.samples)
	rtts := make([]time.Duration, 0, o.samples)
	before := make([]time.Duration, 0, o.samples)
	echoes := make([]time.Duration, 0, o.samples)
	echoReq := make([]byte, 64)
	held, err := acquire(time.Second)
	if err != nil {
		return nil, fmt.Errorf("holder acquire: %w", err)
	}
	for i := 0; i < o.samples; i++ {
		sent := time.Now()
		if _, err := pool.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: held.GetLeaseId()}); err != nil {
			return nil, fmt.Errorf("release with nobody waiting: %w", err)
		}
		before = append(before, time.Since(sent))
		if held, err = acquire(time.Second); err != nil {
			return nil, fmt.Errorf("holder acquire: %w", err)
		}
		done := make(chan woken, 1)
		go func() {
			resp, err := acquire(5 * time.Second)
			w := woken{at: time.Now(), err: err}
			if err == nil {
				w.lease = resp.GetLeaseId()
			}
			done <- w
		}()
		// Release only once the server has the waiter queued, so the measured time is the wake-up alone.
		for queued := false; !queued; {
			stats, err := admin.GetPoolStats(ctx, &keymeshv1.GetPoolStatsRequest{Pool: o.pool})
			if err != nil {
				return nil, fmt.Errorf("pool stats: %w", err)
			}
			queued = stats.GetStats().GetWaiters() == 1
		}
		var echoResp []byte
		echoSent := time.Now()
		if err := conn.Invoke(ctx, EchoMethod, &echoReq, &echoResp, grpc.ForceCodec(rawCodec{})); err != nil {
			return nil, fmt.Errorf("echo: %w", err)
		}
		echoes = append(echoes, time.Since(echoSent))
		sent = time.Now()
		if _, err := pool.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: held.GetLeaseId()}); err != nil {
			return nil, fmt.Errorf("holder release: %w", err)
		}
		rtts = append(rtts, time.Since(sent))
		w := <-done
		if w.err != nil {
			return nil, fmt.Errorf("waiter acquire: %w", w.err)
		}
		wakes = append(wakes, w.at.Sub(sent))
		held = &keymeshv1.AcquireResponse{LeaseId: w.lease}
	}
	_, _ = pool.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: held.GetLeaseId()})
	return &WakeResult{Samples: len(wakes), Wake: summarize(wakes), ReleaseRTT: summarize(rtts), ReleaseBeforeRTT: summarize(before), EchoRTT: summarize(echoes)}, nil
}
