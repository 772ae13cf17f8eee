package keymesh

import (
	"context"
	"sync"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// keeper renews every lease a Client holds over one KeepAlive stream (etcd's LeaseKeepAlive
// model), open only while some lease is held. A lease is renewed at once when it joins or the
// stream reopens, so the server can push its revocation, then every renew interval.
type keeper struct {
	pool keymeshv1.KeyPoolServiceClient

	mu      sync.Mutex
	leases  map[string]*keptLease
	running bool
	wake    chan struct{} // a lease joined or left
}

type keptLease struct {
	lease *Lease
	req   *keymeshv1.KeepAliveRequest
	due   time.Time
	gone  func(*LeaseGoneError)
}

func newKeeper(pool keymeshv1.KeyPoolServiceClient) *keeper {
	return &keeper{pool: pool, leases: map[string]*keptLease{}, wake: make(chan struct{}, 1)}
}

// keep renews l until the returned stop is called; gone is called (once, instead) when the server
// ends the lease or no renewal succeeds before it expires.
func (k *keeper) keep(l *Lease, ttl time.Duration, gone func(*LeaseGoneError)) (stop func()) {
	req := &keymeshv1.KeepAliveRequest{LeaseId: l.ID}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	k.mu.Lock()
	k.leases[l.ID] = &keptLease{lease: l, req: req, due: time.Now(), gone: gone}
	if !k.running {
		k.running = true
		go k.run()
	}
	k.mu.Unlock()
	k.poke()
	return func() {
		k.mu.Lock()
		delete(k.leases, l.ID)
		k.mu.Unlock()
		k.poke()
	}
}

func (k *keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// end removes a lease and tells its holder why it is over.
func (k *keeper) end(id string, g *LeaseGoneError) {
	k.mu.Lock()
	kl, ok := k.leases[id]
	delete(k.leases, id)
	k.mu.Unlock()
	if ok {
		kl.gone(g)
	}
}

// idle stops the loop when no lease is left; it decides under the lock so keep restarts it.
func (k *keeper) idle() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.leases) == 0 {
		k.running = false
		return true
	}
	return false
}

func (k *keeper) run() {
	for {
		k.serve()
		if k.idle() {
			return
		}
		pause := k.expire()
		select {
		case <-time.After(pause):
		case <-k.wake:
		}
	}
}

// expire ends the leases that can no longer be renewed in time and returns how long to wait
// before reopening the stream.
func (k *keeper) expire() time.Duration {
	now := time.Now()
	pause := time.Second
	var expired []string
	k.mu.Lock()
	for id, kl := range k.leases {
		if now.After(kl.lease.ExpiresAt()) {
			expired = append(expired, id)
			continue
		}
		pause = min(pause, kl.lease.renewInterval()/2)
	}
	k.mu.Unlock()
	for _, id := range expired {
		k.end(id, &LeaseGoneError{Reason: keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED, Message: "no renewal succeeded before expiry"})
	}
	return pause
}

// serve runs one stream until it breaks or no lease is left.
func (k *keeper) serve() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := k.pool.KeepAlive(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	k.mu.Lock()
	for _, kl := range k.leases {
		kl.due = now // a new stream must renew every lease to be told of its revocation
	}
	k.mu.Unlock()

	broken := make(chan struct{})
	go func() {
		defer close(broken)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			if r := resp.GetRenewed(); r != nil {
				k.mu.Lock()
				if kl, ok := k.leases[resp.GetLeaseId()]; ok {
					kl.lease.renewed(r.GetTtl().AsDuration(), r.GetRenewInterval().AsDuration(), time.Now())
				}
				k.mu.Unlock()
			} else if g := resp.GetGone(); g != nil {
				k.end(resp.GetLeaseId(), &LeaseGoneError{Reason: g.GetReason(), Message: g.GetMessage()})
			}
		}
	}()

	for {
		due, next, empty := k.schedule(time.Now())
		if empty {
			_ = stream.CloseSend()
			return
		}
		for _, req := range due {
			if stream.Send(req) != nil {
				<-broken
				return
			}
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-broken:
			timer.Stop()
			return
		case <-k.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// schedule returns the renewals due at now (ending leases already past their expiry) and when the
// next one falls due.
func (k *keeper) schedule(now time.Time) (due []*keymeshv1.KeepAliveRequest, next time.Time, empty bool) {
	var expired []string
	k.mu.Lock()
	next = now.Add(time.Minute)
	for id, kl := range k.leases {
		if now.After(kl.lease.ExpiresAt()) {
			expired = append(expired, id)
			continue
		}
		if !kl.due.After(now) {
			due = append(due, kl.req)
			kl.due = now.Add(kl.lease.renewInterval())
		}
		if kl.due.Before(next) {
			next = kl.due
		}
	}
	empty = len(k.leases) == len(expired)
	k.mu.Unlock()
	for _, id := range expired {
		k.end(id, &LeaseGoneError{Reason: keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED, Message: "no renewal answered before expiry"})
	}
	return due, next, empty
}
