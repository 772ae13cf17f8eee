package keymesh

import (
	"context"
	"strings"
	"sync"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// keeper renews every lease a Client holds over one KeepAlive stream (etcd's LeaseKeepAlive
// model), on the schedule of renewals: nothing when a lease joins, a stream only once a renewal
// falls due, closed when no lease is left. One goroutine drives it while some lease is held.
type keeper struct {
	pool keymeshv1.KeyPoolServiceClient

	mu       sync.Mutex
	sched    *renewals
	kept     map[string]*keptLease
	running  bool
	wake     chan struct{} // something changed: step now
	outgoing chan []*keymeshv1.KeepAliveRequest
}

type keptLease struct {
	req  *keymeshv1.KeepAliveRequest
	gone func(*LeaseGoneError)
}

func newKeeper(pool keymeshv1.KeyPoolServiceClient) *keeper {
	k := &keeper{pool: pool, kept: map[string]*keptLease{}, wake: make(chan struct{}, 1)}
	k.sched = newRenewals(func(l *Lease, reason, message string) {
		kl := k.kept[l.LeaseID]
		delete(k.kept, l.LeaseID)
		if kl != nil {
			kl.gone(&LeaseGoneError{Reason: reasonValue(reason), Message: message})
		}
	})
	return k
}

// keep renews l until the returned stop is called; gone is called (once, instead) when the server
// ends the lease or no renewal succeeds before it expires.
func (k *keeper) keep(l *Lease, ttl time.Duration, gone func(*LeaseGoneError)) (stop func()) {
	req := &keymeshv1.KeepAliveRequest{LeaseId: l.LeaseID}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	now := time.Now()
	k.mu.Lock()
	k.kept[l.LeaseID] = &keptLease{req: req, gone: gone}
	poke := k.sched.hold(l, l.ExpiresAt().Sub(now), l.renewInterval(), now)
	if !k.running {
		k.running = true
		go k.run()
	}
	k.mu.Unlock()
	if poke {
		k.poke()
	}
	return func() {
		k.mu.Lock()
		delete(k.kept, l.LeaseID)
		poke := k.sched.release(l.LeaseID)
		k.mu.Unlock()
		if poke {
			k.poke()
		}
	}
}

func (k *keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// run steps the schedule until no lease is left and no stream is open.
func (k *keeper) run() {
	var stream keymeshv1.KeyPoolService_KeepAliveClient
	var streamDone chan struct{} // closed by the stream's reader when the stream ends
	var cancel context.CancelFunc = func() {}
	defer func() { cancel() }()
	for {
		now := time.Now()
		k.mu.Lock()
		step := k.sched.step(now)
		reqs := make([]*keymeshv1.KeepAliveRequest, 0, len(step.send))
		for _, l := range step.send {
			if kl := k.kept[l.LeaseID]; kl != nil {
				reqs = append(reqs, kl.req)
			}
		}
		idle := step.wake.IsZero() && len(k.kept) == 0
		if idle {
			k.running = false
		}
		k.mu.Unlock()

		if step.close || step.open {
			if stream != nil {
				_ = stream.CloseSend()
			}
			cancel()
			stream, streamDone = nil, nil
		}
		if idle {
			return
		}
		if step.open {
			ctx, stop := context.WithCancel(context.Background())
			s, err := k.pool.KeepAlive(ctx)
			if err != nil {
				stop()
				k.mu.Lock()
				k.sched.broken(time.Now())
				k.mu.Unlock()
				continue
			}
			cancel = stop
			stream, streamDone = s, make(chan struct{})
			go k.read(s, streamDone)
		}
		if stream != nil {
			for _, req := range reqs {
				if stream.Send(req) != nil {
					break // the reader sees the failure and reports it
				}
			}
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if !step.wake.IsZero() {
			timer = time.NewTimer(time.Until(step.wake))
			fire = timer.C
		}
		select {
		case <-k.wake:
		case <-fire:
		case <-streamDone:
			stream, streamDone = nil, nil
			k.mu.Lock()
			k.sched.broken(time.Now())
			k.mu.Unlock()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// read applies one stream's answers until it ends, then closes done.
func (k *keeper) read(s keymeshv1.KeyPoolService_KeepAliveClient, done chan<- struct{}) {
	defer close(done)
	for {
		resp, err := s.Recv()
		if err != nil {
			return
		}
		id := resp.GetLeaseId()
		k.mu.Lock()
		if r := resp.GetRenewed(); r != nil {
			ttl, interval := r.GetTtl().AsDuration(), r.GetRenewInterval().AsDuration()
			k.sched.renewed(id, ttl, interval, time.Now())
			if h := k.sched.held[id]; h != nil {
				h.lease.renewed(ttl, interval, time.Now())
			}
			k.mu.Unlock()
		} else if g := resp.GetGone(); g != nil {
			k.sched.gone(id, reasonName(g.GetReason()), g.GetMessage())
			k.mu.Unlock()
			k.poke()
		} else {
			k.mu.Unlock()
		}
	}
}

// reasonName is an ErrorReason's name as every KeyMesh client spells it ("LEASE_REVOKED").
func reasonName(r keymeshv1.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

func reasonValue(name string) keymeshv1.ErrorReason {
	return keymeshv1.ErrorReason(keymeshv1.ErrorReason_value["ERROR_REASON_"+name])
}
