package keymesh

import (
	"context"
	"net"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Several endpoints over real loopback gRPC: failover on UNAVAILABLE, the owner header, the
// KeepAlive stream moving on, a host name's addresses. Behaviour shared by every client is in
// TestFailoverVectors; these check the wiring.

type servedPool struct {
	addr string
	srv  *grpc.Server
	mu   sync.Mutex
	log  []string
}

func (s *servedPool) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// servePool serves f on 127.0.0.1:0, recording the methods called (KeepAlive left out); owner,
// when set, names the owner in every answer's header; unavailable answers every Acquire so.
func servePool(t *testing.T, f *fakePool, owner func() string, unavailable bool) *servedPool {
	t.Helper()
	return servePoolOn(t, "127.0.0.1:0", f, owner, unavailable)
}

func servePoolOn(t *testing.T, addr string, f *fakePool, owner func() string, unavailable bool) *servedPool {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &servedPool{addr: lis.Addr().String()}
	record := func(ctx context.Context, method string) {
		s.mu.Lock()
		s.log = append(s.log, path.Base(method))
		s.mu.Unlock()
		if owner != nil {
			_ = grpc.SetHeader(ctx, metadata.Pairs(ownerHeader, owner()))
		}
	}
	s.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		record(ctx, info.FullMethod)
		if unavailable && strings.HasSuffix(info.FullMethod, "/Acquire") {
			return nil, status.Error(codes.Unavailable, "pool not served")
		}
		return handler(ctx, req)
	}))
	keymeshv1.RegisterKeyPoolServiceServer(s.srv, f)
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(s.srv.Stop)
	return s
}

func routedClient(t *testing.T, target string, opts ...Option) *Client {
	t.Helper()
	c, err := NewClient(target, append([]Option{WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func noop(context.Context, *Lease) error { return nil }

func TestMovesToTheNextEndpointOnUnavailableAndStays(t *testing.T) {
	a := servePool(t, newFakePool("k1"), nil, true)
	b := servePool(t, newFakePool("k1"), nil, false)
	c := routedClient(t, a.addr+","+b.addr)
	for range 2 {
		if err := c.WithLease(context.Background(), "p", noop); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.calls(); !slices.Equal(got, []string{"Acquire"}) {
		t.Errorf("a got %v", got)
	}
	if got := b.calls(); !slices.Equal(got, []string{"Acquire", "Release", "Acquire", "Release"}) {
		t.Errorf("b got %v", got)
	}
}

func TestMovesOnFromAnEndpointThatRefusesConnections(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	b := servePool(t, newFakePool("k1"), nil, false)
	c := routedClient(t, dead+","+b.addr)
	if err := c.WithLease(context.Background(), "p", noop); err != nil {
		t.Fatal(err)
	}
	if got := b.calls(); !slices.Equal(got, []string{"Acquire", "Release"}) {
		t.Errorf("b got %v", got)
	}
}

func TestFollowsTheOwnerHeaderForThePoolsNextCallsAndTheLeasesRelease(t *testing.T) {
	owner := servePool(t, newFakePool("k1"), nil, false)
	a := servePool(t, newFakePool("k1"), func() string { return owner.addr }, false)
	c := routedClient(t, a.addr)
	for range 2 {
		if err := c.WithLease(context.Background(), "p", noop); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.calls(); !slices.Equal(got, []string{"Acquire"}) {
		t.Errorf("a got %v", got)
	}
	if got := owner.calls(); !slices.Equal(got, []string{"Release", "Acquire", "Release"}) {
		t.Errorf("owner got %v", got)
	}
	// Another pool is not routed by p's owner.
	if _, err := c.Acquire(context.Background(), &keymeshv1.AcquireRequest{Pool: "q"}); err != nil {
		t.Fatal(err)
	}
	if got := a.calls(); !slices.Equal(got, []string{"Acquire", "Acquire"}) {
		t.Errorf("a got %v", got)
	}
}

func TestRefusesToFollowAnOwnerOverPlaintextWithATokenUnlessLoopback(t *testing.T) {
	a := servePool(t, newFakePool("k1"), func() string { return "10.255.255.1:50051" }, false)
	c := routedClient(t, a.addr, WithBearerToken("t"))
	for range 2 {
		if err := c.WithLease(context.Background(), "p", noop); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.calls(); !slices.Equal(got, []string{"Acquire", "Release", "Acquire", "Release"}) {
		t.Errorf("a got %v", got)
	}
}

func TestKeepAliveStreamMovesToTheNextEndpointAndResendsTheLease(t *testing.T) {
	fa, fb := newFakePool("k1"), newFakePool("k1")
	a := servePool(t, fa, nil, false)
	b := servePool(t, fb, nil, false)
	c := routedClient(t, a.addr+","+b.addr)
	err := c.WithLease(context.Background(), "p", func(ctx context.Context, l *Lease) error {
		fa.awaitRenewals(t, l.LeaseID, 1)
		a.srv.Stop()
		fb.awaitRenewals(t, l.LeaseID, 2)
		if ctx.Err() != nil {
			t.Errorf("lease context ended: %v", context.Cause(ctx))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.calls(); !slices.Equal(got, []string{"Release"}) {
		t.Errorf("b got %v", got)
	}
}

func TestAHostNameStandsForItsAddresses(t *testing.T) {
	b := servePool(t, newFakePool("k1"), nil, false)
	_, port, _ := net.SplitHostPort(b.addr)
	c := routedClient(t, "localhost:"+port)
	if err := c.WithLease(context.Background(), "p", noop); err != nil {
		t.Fatal(err)
	}
	if got := b.calls(); !slices.Equal(got, []string{"Acquire", "Release"}) {
		t.Errorf("b got %v", got)
	}
}

func TestResolvesAHostNameAgainWhenEveryAddressIsUnavailable(t *testing.T) {
	a := servePool(t, newFakePool("k1"), nil, false)
	_, port, _ := net.SplitHostPort(a.addr)
	// Another loopback address, same port: the name's new address after a move.
	b := servePoolOn(t, "127.0.0.2:"+port, newFakePool("k1"), nil, false)
	var mu sync.Mutex
	addrs := []string{"127.0.0.1"}
	c := routedClient(t, "keymesh.test:"+port)
	c.router.lookup = func(context.Context, string) ([]net.IPAddr, error) {
		mu.Lock()
		defer mu.Unlock()
		var out []net.IPAddr
		for _, a := range addrs {
			out = append(out, net.IPAddr{IP: net.ParseIP(a)})
		}
		return out, nil
	}
	ctx := context.Background()
	if _, err := c.Acquire(ctx, &keymeshv1.AcquireRequest{Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	addrs = []string{"127.0.0.2"}
	mu.Unlock()
	a.srv.Stop()
	if _, err := c.Acquire(ctx, &keymeshv1.AcquireRequest{Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	if got := a.calls(); !slices.Equal(got, []string{"Acquire"}) {
		t.Errorf("a got %v", got)
	}
	if got := b.calls(); !slices.Equal(got, []string{"Acquire"}) {
		t.Errorf("b got %v", got)
	}
}
