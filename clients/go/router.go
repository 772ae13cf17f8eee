package keymesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// router is a grpc.ClientConnInterface over several KeyMesh endpoints: each unary call goes to its
// pool's owner or the current endpoint and fails over on UNAVAILABLE (endpoints.go); streams go to
// the current endpoint. It holds one grpc.ClientConn per endpoint.
type router struct {
	seeds          []string
	dial           func(target string, extra ...grpc.DialOption) (*grpc.ClientConn, error)
	mayFollow      func(hostPort string) bool
	lookup         func(ctx context.Context, host string) ([]net.IPAddr, error)
	defaultTimeout time.Duration
	backoffBase    time.Duration
	backoffCap     time.Duration

	mu    sync.Mutex
	eps   *endpoints
	conns map[string]*grpc.ClientConn
}

// poolKey carries the pool a call is about when its request does not name it (a lease's Release, …).
type poolKey struct{}

func withPool(ctx context.Context, pool string) context.Context {
	return context.WithValue(ctx, poolKey{}, pool)
}

func poolOf(ctx context.Context, req any) string {
	if p, ok := ctx.Value(poolKey{}).(string); ok {
		return p
	}
	if r, ok := req.(interface{ GetPool() string }); ok {
		return r.GetPool()
	}
	return ""
}

var hostPort = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[^\s/@:\[\]]+):\d{1,5}$`)

func (r *router) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	eps, err := r.endpoints(ctx)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok && r.defaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.defaultTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	return withFailover(eps, poolOf(ctx, args), deadline, invokeSteps{r: r, ctx: ctx, method: method, args: args, reply: reply, opts: opts}, r.backoffBase, r.backoffCap)
}

type invokeSteps struct {
	r           *router
	ctx         context.Context
	method      string
	args, reply any
	opts        []grpc.CallOption
}

func (s invokeSteps) attempt(endpoint string) (string, error) {
	conn, err := s.r.conn(endpoint)
	if err != nil {
		return "", err
	}
	var header, trailer metadata.MD
	err = conn.Invoke(s.ctx, s.method, s.args, s.reply, append(s.opts, grpc.Header(&header), grpc.Trailer(&trailer))...)
	owner := first(header.Get(ownerHeader))
	if owner == "" {
		owner = first(trailer.Get(ownerHeader))
	}
	if owner != "" && (!hostPort.MatchString(owner) || !s.r.mayFollow(owner)) {
		owner = ""
	}
	return owner, err
}

func (s invokeSteps) refresh()        { s.r.refresh(s.ctx) }
func (s invokeSteps) now() time.Time  { return time.Now() }
func (s invokeSteps) random() float64 { return rand.Float64() }
func (s invokeSteps) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return s.ctx.Err()
	case <-t.C:
		return nil
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (r *router) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	eps, err := r.endpoints(ctx)
	if err != nil {
		return nil, err
	}
	endpoint := eps.currentEndpoint()
	// A stream the caller did not end itself moves the current endpoint on (failover.json rule 7).
	ended := func() {
		if ctx.Err() == nil {
			eps.streamEnded(endpoint)
		}
	}
	conn, err := r.conn(endpoint)
	if err != nil {
		return nil, err
	}
	s, err := conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		ended()
		return nil, err
	}
	return &watchedStream{ClientStream: s, ended: ended}, nil
}

// watchedStream calls ended once, when receiving first fails (the stream is over).
type watchedStream struct {
	grpc.ClientStream
	once  sync.Once
	ended func()
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ClientStream.RecvMsg(m)
	if err != nil {
		w.once.Do(w.ended)
	}
	return err
}

// conn is the connection to endpoint, dialled at first use (an owner a replica named is one too).
func (r *router) conn(endpoint string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[endpoint]; ok {
		return c, nil
	}
	c, err := r.dial("passthrough:///" + endpoint)
	if err != nil {
		return nil, err
	}
	r.conns[endpoint] = c
	return c, nil
}

// endpoints resolves the seeds at the first call: a host name stands for every address it has.
func (r *router) endpoints(ctx context.Context) (*endpoints, error) {
	r.mu.Lock()
	eps := r.eps
	r.mu.Unlock()
	if eps != nil {
		return eps, nil
	}
	list, err := r.resolve(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eps == nil {
		r.eps = newEndpoints(list)
	}
	return r.eps, nil
}

// refresh resolves the host names again (every endpoint said UNAVAILABLE: the addresses may have
// moved); on failure the list stays as it was.
func (r *router) refresh(ctx context.Context) {
	if !slices.ContainsFunc(r.seeds, isHostName) {
		return
	}
	if list, err := r.resolve(ctx); err == nil {
		r.eps.replace(list)
	}
}

// isHostName reports whether a seed is a "name:port" the client resolves itself.
func isHostName(seed string) bool {
	host, _, err := net.SplitHostPort(seed)
	return err == nil && !strings.Contains(seed, ":///") && !strings.HasPrefix(seed, "unix:") && net.ParseIP(host) == nil
}

// resolve turns the seeds into endpoints, dialling those it has no connection to yet.
func (r *router) resolve(ctx context.Context) ([]string, error) {
	type endpoint struct {
		key, target string
		dialer      func(context.Context, string) (net.Conn, error)
	}
	var found []endpoint
	for _, seed := range r.seeds {
		if !isHostName(seed) {
			// An address, or a target for grpc's own resolvers ("dns:///…", "unix:…"): one endpoint.
			target := seed
			if _, _, err := net.SplitHostPort(seed); err == nil && !strings.Contains(seed, ":///") {
				target = "passthrough:///" + seed
			}
			found = append(found, endpoint{key: seed, target: target})
			continue
		}
		host, port, _ := net.SplitHostPort(seed)
		addrs, err := r.lookup(ctx, host)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "keymesh: cannot resolve %s: %v", host, err)
		}
		for _, a := range addrs {
			addr := net.JoinHostPort(a.IP.String(), port)
			// The name stays the :authority and the TLS server name; the connection goes to this address.
			found = append(found, endpoint{key: addr, target: "passthrough:///" + seed, dialer: func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var list []string
	for _, f := range found {
		if slices.Contains(list, f.key) {
			continue
		}
		if _, ok := r.conns[f.key]; !ok {
			var extra []grpc.DialOption
			if f.dialer != nil {
				extra = append(extra, grpc.WithContextDialer(f.dialer))
			}
			c, err := r.dial(f.target, extra...)
			if err != nil {
				return nil, err
			}
			r.conns[f.key] = c
		}
		list = append(list, f.key)
	}
	if len(list) == 0 {
		return nil, status.Error(codes.Unavailable, "keymesh: no endpoint")
	}
	return list, nil
}

// close closes every connection.
func (r *router) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range r.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// splitTargets parses NewClient's target: one endpoint or several, comma-separated.
func splitTargets(target string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(target, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("keymesh: no endpoint in %q", target)
	}
	return out, nil
}
