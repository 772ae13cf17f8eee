// Command loadgen drives a KeyMesh server over native gRPC (grpc-go) from its own OS process, so the
// server's Node event loop and the load generator never share a thread. Each mode runs for a bounded
// time or count and prints one JSON object on stdout; bench/run.ts reads it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type options struct {
	mode        string
	addr        string
	pool        string
	concurrency int
	duration    time.Duration
	warmup      time.Duration
	payload     int
	wait        time.Duration
	keepalive   bool
	streams     int
	window      int
	leases      int
	samples     int
	provider    string
	keys        string
	rate        float64
	budget      time.Duration
	scenario    string
	seed        uint64
	tokensMin   int64
	tokensMax   int64
	drain       int
	ownerBlind  bool
	ops         int
	rounds      int
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "", "echo | cycle | floor | etcd | renew | wake | goodput | client-cpu")
	flag.StringVar(&o.addr, "addr", "", "KeyMesh gRPC address host:port, or etcd's client address for mode etcd (loopback)")
	flag.StringVar(&o.pool, "pool", "bench", "pool name")
	flag.IntVar(&o.concurrency, "c", 1, "concurrent callers (echo, cycle, floor, etcd)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before it")
	flag.DurationVar(&o.wait, "wait", time.Second, "Acquire wait_timeout (cycle); 0 sends none")
	flag.BoolVar(&o.keepalive, "keepalive", false, "one renewal between grant and release, over a KeepAlive stream per caller (cycle, etcd)")
	flag.IntVar(&o.payload, "payload", 0, "echo payload bytes (0: the size of a marshalled AcquireRequest)")
	flag.IntVar(&o.streams, "streams", 1, "KeepAlive streams (renew)")
	flag.IntVar(&o.window, "window", 64, "renewals in flight per stream (renew)")
	flag.IntVar(&o.leases, "leases", 64, "leases renewed per stream (renew)")
	flag.IntVar(&o.samples, "samples", 1000, "wake-ups measured (wake)")
	flag.StringVar(&o.provider, "provider", "", "fake provider base URL (goodput)")
	flag.StringVar(&o.keys, "keys", "", "comma-separated provider keys (goodput scenarios one and rr)")
	flag.Float64Var(&o.rate, "rate", 0, "offered requests per second: Poisson arrivals (goodput), or paced callers (echo, cycle; 0: back to back)")
	flag.DurationVar(&o.budget, "budget", 5*time.Second, "time a request may take, retries included (goodput)")
	flag.StringVar(&o.scenario, "scenario", "", "one | rr | keymesh (goodput)")
	flag.Uint64Var(&o.seed, "seed", 7, "arrival process seed (goodput)")
	flag.Int64Var(&o.tokensMin, "tokens-min", 0, "smallest sized request, in tokens (goodput; 0 with -tokens-max 0: the fixed small request)")
	flag.Int64Var(&o.tokensMax, "tokens-max", 0, "largest sized request, in tokens (goodput)")
	flag.IntVar(&o.drain, "drain", 0, "send this many requests back to back, report them and exit (goodput: empties the buckets before a scenario)")
	flag.BoolVar(&o.ownerBlind, "owner-blind", false, "drop the keymesh-owner header from answers, so the client keeps calling -addr and a non-owner forwards every call (goodput)")
	flag.IntVar(&o.ops, "ops", 1000, "scoped leases and bare pairs per round (client-cpu)")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds (client-cpu)")
	flag.Parse()

	var (
		out any
		err error
	)
	switch o.mode {
	case "echo", "cycle", "floor", "etcd":
		out, err = runUnary(o)
	case "renew":
		out, err = runRenew(o)
	case "wake":
		out, err = runWake(o)
	case "goodput":
		out, err = runGoodput(o)
	case "client-cpu":
		out, err = runClientCPU(o)
	default:
		err = fmt.Errorf("unknown -mode %q", o.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func dial(addr string) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, fmt.Errorf("-addr is required")
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
