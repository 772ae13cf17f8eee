package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RenewResult counts KeepAlive renewals answered over a number of bidi streams, each stream
// renewing its own set of leases with a bounded number of renewals in flight.
type RenewResult struct {
	Streams         int     `json:"streams"`
	LeasesPerStream int     `json:"leases_per_stream"`
	Window          int     `json:"window_per_stream"`
	Seconds         float64 `json:"seconds"`
	Renewals        int64   `json:"renewals"`
	RenewalsPerSec  float64 `json:"renewals_per_sec"`
	Gone            int64   `json:"gone"`
	Latency         Latency `json:"latency"`
}

func runRenew(o options) (*RenewResult, error) {
	conn, err := dial(o.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	pool := keymeshv1.NewKeyPoolServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	leaseIDs := make([][]string, o.streams)
	for s := range leaseIDs {
		for range o.leases {
			resp, err := pool.Acquire(ctx, &keymeshv1.AcquireRequest{
				Pool: o.pool, Holder: "bench-renew", LeaseTtl: durationpb.New(5 * time.Minute), WaitTimeout: durationpb.New(time.Second),
			})
			if err != nil {
				return nil, fmt.Errorf("acquire for renewals: %w", err)
			}
			leaseIDs[s] = append(leaseIDs[s], resp.GetLeaseId())
		}
	}
	defer func() {
		for _, ids := range leaseIDs {
			for _, id := range ids {
				_, _ = pool.Release(context.Background(), &keymeshv1.ReleaseRequest{LeaseId: id})
			}
		}
	}()

	var (
		measuring atomic.Bool
		stop      atomic.Bool
		renewals  atomic.Int64
		gone      atomic.Int64
		mu        sync.Mutex
		all       []time.Duration
		wg        sync.WaitGroup
		failed    = make(chan error, o.streams)
	)
	for s := 0; s < o.streams; s++ {
		stream, err := pool.KeepAlive(ctx)
		if err != nil {
			return nil, fmt.Errorf("open KeepAlive: %w", err)
		}
		ids := leaseIDs[s]
		// Renewals of one stream are answered in order, so the send times form a FIFO.
		sent := make(chan time.Time, o.window)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer func() { _ = stream.CloseSend() }()
			for i := 0; !stop.Load(); i++ {
				select {
				case sent <- time.Now():
				case <-ctx.Done():
					return
				}
				if err := stream.Send(&keymeshv1.KeepAliveRequest{LeaseId: ids[i%len(ids)]}); err != nil {
					failed <- fmt.Errorf("KeepAlive send: %w", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			var lat []time.Duration
			defer func() {
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			}()
			for {
				resp, err := stream.Recv()
				if err != nil {
					if !stop.Load() {
						failed <- fmt.Errorf("KeepAlive recv: %w", err)
					}
					return
				}
				at := <-sent
				if !measuring.Load() {
					continue
				}
				if resp.GetGone() != nil {
					gone.Add(1)
					continue
				}
				renewals.Add(1)
				lat = append(lat, time.Since(at))
			}
		}()
	}
	time.Sleep(o.warmup)
	measuring.Store(true)
	begin := time.Now()
	time.Sleep(o.duration)
	measuring.Store(false)
	elapsed := time.Since(begin).Seconds()
	stop.Store(true)
	cancel()
	wg.Wait()
	select {
	case err := <-failed:
		if renewals.Load() == 0 {
			return nil, err
		}
	default:
	}
	return &RenewResult{
		Streams:         o.streams,
		LeasesPerStream: o.leases,
		Window:          o.window,
		Seconds:         elapsed,
		Renewals:        renewals.Load(),
		RenewalsPerSec:  float64(renewals.Load()) / elapsed,
		Gone:            gone.Load(),
		Latency:         summarize(all),
	}, nil
}
