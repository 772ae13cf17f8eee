package keymesh

import (
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ownerHeader is the response header in which a replica names the owner of the pool a call was about.
const ownerHeader = "keymesh-owner"

// endpoints is which endpoint ("host:port") a call goes to: the owner of its pool when a replica
// named one, else the current endpoint. Plain bookkeeping with no I/O and no clock, pinned by
// test/vectors/failover.json; safe for concurrent use.
type endpoints struct {
	mu      sync.Mutex
	list    []string
	current int
	owners  map[string]string
}

func newEndpoints(list []string) *endpoints {
	return &endpoints{list: list, owners: map[string]string{}}
}

// currentEndpoint is where calls without an owner and the KeepAlive stream go.
func (e *endpoints) currentEndpoint() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.list[e.current]
}

// target is where a call about pool ("": no pool) goes first.
func (e *endpoints) target(pool string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if owner, ok := e.owners[pool]; ok && pool != "" {
		return owner
	}
	return e.list[e.current]
}

// answered records an answer other than UNAVAILABLE from endpoint; owner is its keymesh-owner header.
func (e *endpoints) answered(endpoint, pool, owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i := slices.Index(e.list, endpoint); i >= 0 {
		e.current = i
	}
	if pool != "" && owner != "" {
		e.owners[pool] = owner
	}
}

// unavailable records UNAVAILABLE from endpoint and returns where the call goes next at once, or
// "" when every endpoint of the list has been tried in this round.
func (e *endpoints) unavailable(endpoint, pool string, tried map[string]bool) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if pool != "" && e.owners[pool] == endpoint {
		delete(e.owners, pool)
	}
	start := e.current
	if i := slices.Index(e.list, endpoint); i >= 0 {
		tried[endpoint] = true
		start = i + 1
	}
	for k := range len(e.list) {
		if c := e.list[(start+k)%len(e.list)]; !tried[c] {
			return c
		}
	}
	return ""
}

// after is the first endpoint of a new round after endpoint.
func (e *endpoints) after(endpoint string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i := slices.Index(e.list, endpoint); i >= 0 {
		return e.list[(i+1)%len(e.list)]
	}
	return e.list[e.current]
}

// replace sets the list anew (a host name resolved again); the current endpoint stays current if it
// is still in the list.
func (e *endpoints) replace(list []string) {
	if len(list) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	current := e.list[e.current]
	e.list = list
	e.current = max(slices.Index(list, current), 0)
}

// streamEnded records that the KeepAlive stream on endpoint ended without the client asking.
func (e *endpoints) streamEnded(endpoint string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.list[e.current] == endpoint {
		e.current = (e.current + 1) % len(e.list)
	}
}

// failoverSteps is what the failover loop does to the world; tests give fakes.
type failoverSteps interface {
	// attempt makes the call on endpoint; owner is the answer's keymesh-owner header ("" if none).
	attempt(endpoint string) (owner string, err error)
	now() time.Time
	// sleep pauses; an error means the caller gave up.
	sleep(d time.Duration) error
	random() float64
	// refresh runs after the pause that follows a round of UNAVAILABLE: it resolves the host names
	// again (their addresses may have moved).
	refresh()
}

// withFailover makes one unary call with failover (test/vectors/failover.json): UNAVAILABLE moves
// at once to the next endpoint not yet tried in this round; once every endpoint said UNAVAILABLE,
// a full-jitter pause that grows per round (and the host names resolved again); any other answer
// ends the call. It gives up with the last UNAVAILABLE when the next pause would end past the
// deadline (zero: none).
func withFailover(e *endpoints, pool string, deadline time.Time, s failoverSteps, base, ceiling time.Duration) error {
	var tried map[string]bool
	pauses := 0
	target := e.target(pool)
	for {
		owner, err := s.attempt(target)
		if status.Code(err) != codes.Unavailable {
			e.answered(target, pool, owner)
			return err
		}
		if tried == nil {
			tried = map[string]bool{}
		}
		if next := e.unavailable(target, pool, tried); next != "" {
			target = next
			continue
		}
		pause := fullJitter(base, ceiling, pauses, s.random)
		if !deadline.IsZero() && s.now().Add(pause).After(deadline) {
			return err
		}
		if serr := s.sleep(pause); serr != nil {
			return err
		}
		pauses++
		s.refresh()
		clear(tried)
		target = e.after(target)
	}
}
