package main

import (
	"context"
	"fmt"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// sample is one op's times: the whole op and, for a lease cycle, its parts.
type sample struct{ total, acquire, renew, release time.Duration }

// opFn runs one op; a worker makes its own with newOp, whose ctx bounds the worker's KeepAlive stream.
type (
	opFn  func(ctx context.Context) (sample, error)
	newOp func(streams context.Context) (opFn, error)
)

// etcdLeaseTTL is the TTL of etcd's leases in mode etcd, the order of KeyMesh's default lease TTL: each
// lease is revoked long before it would expire.
const etcdLeaseTTL = 60

// unaryOp is the op of o.mode: a bare echo, KeyMesh's lease cycle (or its floor), or etcd's.
func unaryOp(o options, conn *grpc.ClientConn, payload []byte) (newOp, error) {
	switch o.mode {
	case "echo":
		return func(context.Context) (opFn, error) {
			return func(ctx context.Context) (sample, error) {
				start := time.Now()
				req := payload
				var resp []byte
				err := conn.Invoke(ctx, EchoMethod, &req, &resp, grpc.ForceCodec(rawCodec{}))
				if err == nil && len(resp) != len(payload) {
					err = fmt.Errorf("echo returned %d bytes, sent %d", len(resp), len(payload))
				}
				return sample{total: time.Since(start)}, err
			}, nil
		}, nil
	case "cycle", "floor":
		if o.mode == "floor" && o.keepalive {
			return nil, fmt.Errorf("-keepalive needs -mode=cycle or etcd: the floor has no KeepAlive")
		}
		return keymeshCycle(o, conn), nil
	case "etcd":
		return etcdCycle(o, conn), nil
	}
	return nil, fmt.Errorf("unknown unary mode %q", o.mode)
}

// keymeshCycle is Acquire, with -keepalive one renewal over the worker's KeepAlive stream, and Release.
func keymeshCycle(o options, conn *grpc.ClientConn) newOp {
	pool := keymeshv1.NewKeyPoolServiceClient(conn)
	req := acquireRequest(o.pool, o.wait)
	acquire, release := pool.Acquire, pool.Release
	if o.mode == "floor" {
		acquire = func(ctx context.Context, in *keymeshv1.AcquireRequest, _ ...grpc.CallOption) (*keymeshv1.AcquireResponse, error) {
			out := new(keymeshv1.AcquireResponse)
			return out, conn.Invoke(ctx, FloorService+"Acquire", in, out)
		}
		release = func(ctx context.Context, in *keymeshv1.ReleaseRequest, _ ...grpc.CallOption) (*keymeshv1.ReleaseResponse, error) {
			out := new(keymeshv1.ReleaseResponse)
			return out, conn.Invoke(ctx, FloorService+"Release", in, out)
		}
	}
	return func(streams context.Context) (opFn, error) {
		var renew func(*keymeshv1.AcquireResponse) error
		if o.keepalive {
			stream, err := pool.KeepAlive(streams)
			if err != nil {
				return nil, fmt.Errorf("open KeepAlive: %w", err)
			}
			renew = func(lease *keymeshv1.AcquireResponse) error {
				if err := stream.Send(&keymeshv1.KeepAliveRequest{LeaseId: lease.GetLeaseId()}); err != nil {
					return fmt.Errorf("KeepAlive send: %w", err)
				}
				// The stream watches every lease it renewed and pushes "gone" when it ends: the previous
				// cycle's Release left one of those ahead of this renewal's answer.
				for {
					resp, err := stream.Recv()
					if err != nil {
						return fmt.Errorf("KeepAlive recv: %w", err)
					}
					if resp.GetLeaseId() != lease.GetLeaseId() {
						continue
					}
					if resp.GetRenewed() == nil {
						return fmt.Errorf("KeepAlive: lease gone: %s", resp.GetGone().GetMessage())
					}
					return nil
				}
			}
		}
		return func(ctx context.Context) (sample, error) {
			return timedCycle(ctx,
				func(ctx context.Context) (*keymeshv1.AcquireResponse, error) { return acquire(ctx, req) },
				renew,
				func(ctx context.Context, lease *keymeshv1.AcquireResponse) error {
					_, err := release(ctx, &keymeshv1.ReleaseRequest{LeaseId: lease.GetLeaseId()})
					return err
				})
		}, nil
	}
}

// etcdCycle is etcd's lease cycle through its own gRPC stubs: LeaseGrant, with -keepalive one
// LeaseKeepAlive send and receive over the worker's stream, and LeaseRevoke.
func etcdCycle(o options, conn *grpc.ClientConn) newOp {
	lease := etcdserverpb.NewLeaseClient(conn)
	return func(streams context.Context) (opFn, error) {
		var renew func(int64) error
		if o.keepalive {
			stream, err := lease.LeaseKeepAlive(streams)
			if err != nil {
				return nil, fmt.Errorf("open LeaseKeepAlive: %w", err)
			}
			renew = func(id int64) error {
				if err := stream.Send(&etcdserverpb.LeaseKeepAliveRequest{ID: id}); err != nil {
					return fmt.Errorf("LeaseKeepAlive send: %w", err)
				}
				resp, err := stream.Recv()
				if err != nil {
					return fmt.Errorf("LeaseKeepAlive recv: %w", err)
				}
				if resp.GetID() != id || resp.GetTTL() <= 0 {
					return fmt.Errorf("LeaseKeepAlive: lease %x answered id %x ttl %d", id, resp.GetID(), resp.GetTTL())
				}
				return nil
			}
		}
		grant := func(ctx context.Context) (int64, error) {
			granted, err := lease.LeaseGrant(ctx, &etcdserverpb.LeaseGrantRequest{TTL: etcdLeaseTTL})
			if err == nil && granted.GetError() != "" {
				err = fmt.Errorf("LeaseGrant: %s", granted.GetError())
			}
			return granted.GetID(), err
		}
		revoke := func(ctx context.Context, id int64) error {
			_, err := lease.LeaseRevoke(ctx, &etcdserverpb.LeaseRevokeRequest{ID: id})
			return err
		}
		return func(ctx context.Context) (sample, error) { return timedCycle(ctx, grant, renew, revoke) }, nil
	}
}

// timedCycle runs one lease cycle, grant, then renew when given, then release, and times each part.
func timedCycle[L any](ctx context.Context, grant func(context.Context) (L, error), renew func(L) error, release func(context.Context, L) error) (sample, error) {
	start := time.Now()
	lease, err := grant(ctx)
	if err != nil {
		return sample{}, err
	}
	granted := time.Now()
	renewed := granted
	if renew != nil {
		if err := renew(lease); err != nil {
			return sample{}, err
		}
		renewed = time.Now()
	}
	err = release(ctx, lease)
	end := time.Now()
	return sample{total: end.Sub(start), acquire: granted.Sub(start), renew: renewed.Sub(granted), release: end.Sub(renewed)}, err
}
