package keymesh

import "time"

// renewalStep is what the stream driver must do now.
type renewalStep struct {
	open  bool      // open a stream (the previous one is over); send then holds every lease
	close bool      // half-close the stream: no lease is left
	send  []*Lease  // the leases to renew now
	wake  time.Time // when to step again unless something happens first; zero: only then
}

type streamState int

const (
	streamClosed streamState = iota
	streamOpen
	streamBroken
)

type heldLease struct {
	lease    *Lease
	deadline time.Time
	interval time.Duration
	due      time.Time
}

const (
	reopenPause    = 200 * time.Millisecond
	reopenPauseCap = 5 * time.Second
	// minRenewInterval keeps renewals out of a tight loop, whatever interval the server suggests.
	minRenewInterval = 50 * time.Millisecond
)

// renewals is when a client's leases are renewed over its one KeepAlive stream: plain bookkeeping
// with no I/O, no locking and no clock of its own (every call is given now), pinned by
// test/vectors/keepalive.json. A lease is first renewed at its renew interval (never when its
// scope starts), so a lease shorter than that costs no stream at all. The stream is opened when a
// renewal falls due and closed when no lease is left; opening it renews every lease at once,
// because the server pushes revocations only for the leases a stream renewed. A lease ends only on
// a "gone" answer or at its local deadline: a failed stream (whatever its status) is reopened after
// a pause that doubles while no renewal is answered.
type renewals struct {
	held     map[string]*heldLease
	onEnd    func(l *Lease, reason, message string)
	state    streamState
	reopenAt time.Time
	breaks   int
	wake     time.Time
}

func newRenewals(onEnd func(l *Lease, reason, message string)) *renewals {
	return &renewals{held: map[string]*heldLease{}, onEnd: onEnd}
}

// hold adds a lease; it reports whether the driver must step now (its next wake-up is later than
// this lease's first renewal).
func (r *renewals) hold(l *Lease, ttl, renewInterval time.Duration, now time.Time) bool {
	interval := intervalOf(ttl, renewInterval)
	due := now.Add(interval)
	r.held[l.LeaseID] = &heldLease{lease: l, deadline: now.Add(ttl), interval: interval, due: due}
	return r.wake.IsZero() || due.Before(r.wake)
}

// release removes a lease; it reports whether the driver must step now to close the stream.
func (r *renewals) release(id string) bool {
	if _, ok := r.held[id]; !ok {
		return false
	}
	delete(r.held, id)
	return len(r.held) == 0 && r.state != streamClosed
}

func (r *renewals) renewed(id string, ttl, renewInterval time.Duration, now time.Time) {
	h, ok := r.held[id]
	if !ok {
		return
	}
	r.breaks = 0
	h.deadline = now.Add(ttl)
	h.interval = intervalOf(ttl, renewInterval)
	h.due = now.Add(h.interval)
}

// gone ends a lease the server says is over (reason is an ErrorReason name, e.g. "LEASE_REVOKED").
func (r *renewals) gone(id, reason, message string) { r.end(id, reason, message) }

// broken records that the stream ended or failed while it was needed.
func (r *renewals) broken(now time.Time) {
	if r.state != streamOpen {
		return
	}
	r.state = streamBroken
	r.reopenAt = now.Add(min(reopenPause<<min(r.breaks, 16), reopenPauseCap))
	r.breaks++
}

func (r *renewals) step(now time.Time) renewalStep {
	var out renewalStep
	for id, h := range r.held {
		if !now.Before(h.deadline) {
			r.end(id, "LEASE_EXPIRED", "no renewal was answered before the lease's expiry")
		}
	}
	if len(r.held) == 0 {
		out.close = r.state == streamOpen
		r.state = streamClosed
		r.wake = time.Time{}
		return out
	}
	if r.state == streamBroken && !now.Before(r.reopenAt) {
		out.open = true
	}
	if r.state == streamClosed {
		for _, h := range r.held {
			if !h.due.After(now) {
				out.open = true
			}
		}
	}
	if out.open {
		r.state = streamOpen
	}
	var wake time.Time
	earlier := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, h := range r.held {
		if r.state == streamOpen && (out.open || !h.due.After(now)) {
			out.send = append(out.send, h.lease)
			h.due = now.Add(h.interval)
		}
		earlier(h.deadline)
		if r.state != streamBroken {
			earlier(h.due)
		}
	}
	if r.state == streamBroken {
		earlier(r.reopenAt)
	}
	r.wake = wake
	out.wake = wake
	return out
}

func (r *renewals) end(id, reason, message string) {
	h, ok := r.held[id]
	if !ok {
		return
	}
	delete(r.held, id)
	r.onEnd(h.lease, reason, message)
}

func intervalOf(ttl, renewInterval time.Duration) time.Duration {
	if renewInterval <= 0 {
		renewInterval = ttl / 3
	}
	return max(renewInterval, minRenewInterval)
}
