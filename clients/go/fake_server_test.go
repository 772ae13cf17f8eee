package keymesh

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakePool is an in-process KeyPoolService over real loopback gRPC: it lends keys in order,
// records every call, and lets a test push revocations and watch renewals.
type fakePool struct {
	keymeshv1.UnimplementedKeyPoolServiceServer
	keys          []string
	ttl           time.Duration
	renewInterval time.Duration
	keepAliveErr  error  // when set, KeepAlive fails with it at once
	refuse        bool   // when set, every renewal is answered "gone: expired"
	releaseErr    error  // when set, Release fails with it
	token         string // when set, every call must carry it

	streams  atomic.Int32 // KeepAlive streams opened
	mu       sync.Mutex
	seq      int
	acquires []*keymeshv1.AcquireRequest

	renewals chan string        // one lease id per renewal answered
	ended    chan proto.Message // Release, MarkFailed and MarkRateLimited requests
	revoke   chan string        // lease ids to push "gone" for on open streams
}

func newFakePool(keys ...string) *fakePool {
	return &fakePool{
		keys:          keys,
		ttl:           time.Minute,
		renewInterval: 5 * time.Millisecond,
		renewals:      make(chan string, 10000),
		ended:         make(chan proto.Message, 100),
		revoke:        make(chan string, 10),
	}
}

// serve starts f on 127.0.0.1:0 and returns a client connected to it.
func (f *fakePool) serve(t *testing.T, opts ...Option) *Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(f.checkToken))
	keymeshv1.RegisterKeyPoolServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c, err := NewClient(lis.Addr().String(), append([]Option{WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (f *fakePool) checkToken(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if f.token != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		if !slices.Contains(md.Get("authorization"), "Bearer "+f.token) {
			return nil, status.Error(codes.Unauthenticated, "no token")
		}
	}
	return handler(ctx, req)
}

func withDetail(c codes.Code, reason keymeshv1.ErrorReason, retryAfter time.Duration) error {
	d := &keymeshv1.ErrorDetail{Reason: reason}
	if retryAfter > 0 {
		d.RetryAfter = durationpb.New(retryAfter)
	}
	s, err := status.New(c, reason.String()).WithDetails(d)
	if err != nil {
		panic(err)
	}
	return s.Err()
}

func (f *fakePool) Acquire(_ context.Context, req *keymeshv1.AcquireRequest) (*keymeshv1.AcquireResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquires = append(f.acquires, req)
	for _, k := range f.keys {
		if slices.Contains(req.GetExcludeKeyIds(), k) {
			continue
		}
		f.seq++
		return &keymeshv1.AcquireResponse{
			LeaseId:       fmt.Sprintf("lease-%d", f.seq),
			Key:           "sk-secret-" + k,
			KeyId:         k,
			KeyLabel:      "label-" + k,
			KeyMetadata:   map[string]string{"base_url": "http://127.0.0.1:1/v1"},
			Pool:          req.GetPool(),
			ExpiresAt:     timestamppb.New(time.Now().Add(f.ttl)),
			Ttl:           durationpb.New(f.ttl),
			RenewInterval: durationpb.New(f.renewInterval),
		}, nil
	}
	return nil, withDetail(codes.ResourceExhausted, keymeshv1.ErrorReason_ERROR_REASON_NO_KEY_AVAILABLE, time.Second)
}

func (f *fakePool) acquireRequests() []*keymeshv1.AcquireRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.acquires)
}

func (f *fakePool) Release(_ context.Context, req *keymeshv1.ReleaseRequest) (*keymeshv1.ReleaseResponse, error) {
	f.ended <- req
	if f.releaseErr != nil {
		return nil, f.releaseErr
	}
	return &keymeshv1.ReleaseResponse{}, nil
}

func (f *fakePool) MarkFailed(_ context.Context, req *keymeshv1.MarkFailedRequest) (*keymeshv1.MarkFailedResponse, error) {
	f.ended <- req
	return &keymeshv1.MarkFailedResponse{ClassifiedAs: req.GetReason()}, nil
}

func (f *fakePool) MarkRateLimited(_ context.Context, req *keymeshv1.MarkRateLimitedRequest) (*keymeshv1.MarkRateLimitedResponse, error) {
	f.ended <- req
	return &keymeshv1.MarkRateLimitedResponse{}, nil
}

// RenewLease never answers, so only the caller's deadline ends it.
func (f *fakePool) RenewLease(ctx context.Context, _ *keymeshv1.RenewLeaseRequest) (*keymeshv1.RenewLeaseResponse, error) {
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func (f *fakePool) KeepAlive(stream grpc.BidiStreamingServer[keymeshv1.KeepAliveRequest, keymeshv1.KeepAliveResponse]) error {
	f.streams.Add(1)
	if f.keepAliveErr != nil {
		return f.keepAliveErr
	}
	var sendMu sync.Mutex
	send := func(r *keymeshv1.KeepAliveResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	go func() {
		for {
			select {
			case <-stream.Context().Done():
				return
			case id := <-f.revoke:
				_ = send(&keymeshv1.KeepAliveResponse{LeaseId: id, Result: &keymeshv1.KeepAliveResponse_Gone{
					Gone: &keymeshv1.LeaseGone{Reason: keymeshv1.ErrorReason_ERROR_REASON_LEASE_REVOKED, Message: "key disabled by operator"},
				}})
			}
		}
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if f.refuse {
			if err := send(&keymeshv1.KeepAliveResponse{LeaseId: req.GetLeaseId(), Result: &keymeshv1.KeepAliveResponse_Gone{
				Gone: &keymeshv1.LeaseGone{Reason: keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED, Message: "expired"},
			}}); err != nil {
				return err
			}
			continue
		}
		if err := send(&keymeshv1.KeepAliveResponse{LeaseId: req.GetLeaseId(), Result: &keymeshv1.KeepAliveResponse_Renewed{
			Renewed: &keymeshv1.LeaseRenewed{
				ExpiresAt: timestamppb.New(time.Now().Add(f.ttl)), Ttl: durationpb.New(f.ttl), RenewInterval: durationpb.New(f.renewInterval),
			},
		}}); err != nil {
			return err
		}
		f.renewals <- req.GetLeaseId()
	}
}

// nextEnd waits for the call that ended a lease.
func (f *fakePool) nextEnd(t *testing.T) proto.Message {
	t.Helper()
	select {
	case m := <-f.ended:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("lease was never ended")
		return nil
	}
}

// awaitRenewals waits until n renewals of lease id were answered.
func (f *fakePool) awaitRenewals(t *testing.T, id string, n int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for seen := 0; seen < n; {
		select {
		case got := <-f.renewals:
			if got == id {
				seen++
			}
		case <-timeout:
			t.Fatalf("saw fewer than %d renewals of %s", n, id)
		}
	}
}
