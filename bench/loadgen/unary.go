package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// EchoMethod is the bare unary method bench/run.ts mounts on the same grpc-js server as KeyMesh.
const EchoMethod = "/keymesh.bench.v1.Echo/Echo"

// FloorService answers Acquire and Release with KeyMesh's messages, codecs and adapter but no engine
// (bench/lib/server.ts): the floor of the lease cycle on this transport.
const FloorService = "/keymesh.bench.v1.LeaseFloor/"

// rawCodec sends and receives bytes as they are, matching the echo handler's identity serializers.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}

// Name is the content-subtype sent on the wire: "proto" keeps content-type application/grpc+proto.
func (rawCodec) Name() string { return "proto" }

// UnaryResult is one (mode, concurrency) run. For cycle, floor and etcd, Ops counts lease cycles (Acquire
// and Release, or etcd's LeaseGrant and LeaseRevoke, with -keepalive one renewal between them) and RPS
// counts unary RPCs (2 per cycle).
type UnaryResult struct {
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Ops         int64   `json:"ops"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	RPS         float64 `json:"rps"`
	Errors      int64   `json:"errors"`
	// OpsAll counts every completed op, warm-up included, so the server's CPU over the whole run can be
	// divided by it; ClientCPUPerRPC is this process's CPU per RPC in the measured window.
	OpsAll          int64   `json:"ops_all"`
	ClientCPUPerRPC float64 `json:"client_cpu_us_per_rpc"`
	FirstError      string  `json:"first_error,omitempty"`
	Latency         Latency `json:"latency"`
	// Acquire and Release are etcd's LeaseGrant and LeaseRevoke in mode etcd; KeepAlive is the one
	// renewal's send-to-answer time of a cycle with -keepalive.
	Acquire       *Latency `json:"acquire,omitempty"`
	Release       *Latency `json:"release,omitempty"`
	KeepAlive     *Latency `json:"keepalive,omitempty"`
	WithKeepAlive bool     `json:"with_keepalive"`
}

// acquireRequest asks for a key of pool, waiting up to wait for one (0: answer at once).
func acquireRequest(pool string, wait time.Duration) *keymeshv1.AcquireRequest {
	req := &keymeshv1.AcquireRequest{Pool: pool, Holder: "bench-loadgen"}
	if wait > 0 {
		req.WaitTimeout = durationpb.New(wait)
	}
	return req
}

func runUnary(o options) (*UnaryResult, error) {
	conn, err := dial(o.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	payloadSize := o.payload
	if payloadSize == 0 {
		b, _ := proto.Marshal(acquireRequest(o.pool, o.wait))
		payloadSize = len(b)
	}
	payload := make([]byte, payloadSize)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}

	makeOp, err := unaryOp(o, conn, payload)
	if err != nil {
		return nil, err
	}
	pair := o.mode != "echo"
	// Every worker makes its own op: with -keepalive each has its own KeepAlive stream for its whole run.
	streams, stopStreams := context.WithCancel(context.Background())
	defer stopStreams()

	// Connect before the clock starts, so the first calls do not pay the HTTP/2 handshake.
	warmOp, err := makeOp(streams)
	if err != nil {
		return nil, fmt.Errorf("first %s call: %w", o.mode, err)
	}
	warmCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := warmOp(warmCtx); err != nil {
		cancel()
		return nil, fmt.Errorf("first %s call: %w", o.mode, err)
	}
	cancel()

	var (
		measuring atomic.Bool
		stop      atomic.Bool
		ops       atomic.Int64
		opsAll    atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		mu        sync.Mutex
		totals    []time.Duration
		acquires  []time.Duration
		releases  []time.Duration
		renewals  []time.Duration
		wg        sync.WaitGroup
	)
	ctx := context.Background()
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := makeOp(streams)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			var t, a, r, k []time.Duration
			// Paced callers (-rate) start a call every concurrency/rate seconds, from a random phase.
			var interval time.Duration
			var next time.Time
			if o.rate > 0 {
				interval = time.Duration(float64(o.concurrency) / o.rate * float64(time.Second))
				next = time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
			}
			for !stop.Load() {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				counted := measuring.Load()
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				s, err := op(callCtx)
				cancel()
				if err == nil {
					opsAll.Add(1)
				}
				if !counted || !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ops.Add(1)
				t = append(t, s.total)
				if pair {
					a = append(a, s.acquire)
					r = append(r, s.release)
				}
				if o.keepalive {
					k = append(k, s.renew)
				}
			}
			mu.Lock()
			totals = append(totals, t...)
			acquires = append(acquires, a...)
			releases = append(releases, r...)
			renewals = append(renewals, k...)
			mu.Unlock()
		}()
	}
	time.Sleep(o.warmup)
	measuring.Store(true)
	begin, cpuBegin := time.Now(), cpuTime()
	time.Sleep(o.duration)
	measuring.Store(false)
	elapsed, cpu := time.Since(begin).Seconds(), cpuTime()-cpuBegin
	stop.Store(true)
	wg.Wait()

	res := &UnaryResult{
		Mode:          o.mode,
		Concurrency:   o.concurrency,
		Seconds:       elapsed,
		Ops:           ops.Load(),
		OpsPerSec:     float64(ops.Load()) / elapsed,
		Errors:        errs.Load(),
		Latency:       summarize(totals),
		WithKeepAlive: o.keepalive,
	}
	res.RPS = res.OpsPerSec
	res.OpsAll = opsAll.Load() + 1
	rpcs := float64(res.Ops)
	if pair {
		rpcs *= 2
	}
	if rpcs > 0 {
		res.ClientCPUPerRPC = float64(cpu.Microseconds()) / rpcs
	}
	if pair {
		res.RPS = 2 * res.OpsPerSec
		acq, rel := summarize(acquires), summarize(releases)
		res.Acquire, res.Release = &acq, &rel
	}
	if o.keepalive {
		k := summarize(renewals)
		res.KeepAlive = &k
	}
	if v, ok := firstErr.Load().(string); ok {
		res.FirstError = v
	}
	return res, nil
}
