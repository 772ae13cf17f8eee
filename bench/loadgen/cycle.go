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
		var stream grpc.BidiStreamingClient[keymeshv1.KeepAliveRequest, keymeshv1.KeepAliveResponse]
		if o.keepalive {
			var err error
			if stream, err = pool.KeepAlive(streams); err != nil {
				return nil, fmt.Errorf("open KeepAlive: %w", err)
			}
		}
		renew := func(leaseID string) error {
			if err := stream.Send(&keymeshv1.KeepAliveRequest{LeaseId: leaseID}); err != nil {
				return fmt.Errorf("KeepAlive send: %w", err)
			}
			// The stream watches every lease it renewed and pushes "gone" when it ends: the previous
			// cycle's Release left one of those ahead of this renewal's answer.
			for {
				resp, err := stream.Recv()
				if err != nil {
					return fmt.Errorf("KeepAlive recv: %w", err)
				}
				if resp.GetLeaseId() != leaseID {
					continue
				}
				if resp.GetRenewed() == nil {
					return fmt.Errorf("KeepAlive: lease gone: %s", resp.GetGone().GetMessage())
				}
				return nil
			}
		}
		return func(ctx context.Context) (sample, error) {
			start := time.Now()
			lease, err := acquire(ctx, req)
			if err != nil {
				return sample{}, err
			}
			acquired := time.Now()
			renewed := acquired
			if stream != nil {
				if err := renew(lease.GetLeaseId()); err != nil {
					return sample{}, err
				}
				renewed = time.Now()
			}
			_, err = release(ctx, &keymeshv1.ReleaseRequest{LeaseId: lease.GetLeaseId()})
			end := time.Now()
			return sample{total: end.Sub(start), acquire: acquired.Sub(start), renew: renewed.Sub(acquired), release: end.Sub(renewed)}, err
		}, nil
	}
}

// etcdCycle is etcd's lease cycle through its own gRPC stubs: LeaseGrant, with -keepalive one
// LeaseKeepAlive send and receive over the worker's stream, and LeaseRevoke.
func etcdCycle(o options, conn *grpc.ClientConn) newOp {
	lease := etcdserverpb.NewLeaseClient(conn)
	return func(streams context.Context) (opFn, error) {
		var stream grpc.BidiStreamingClient[etcdserverpb.LeaseKeepAliveRequest, etcdserverpb.LeaseKeepAliveResponse]
		if o.keepalive {
			var err error
			if stream, err = lease.LeaseKeepAlive(streams); err != nil {
				return nil, fmt.Errorf("open LeaseKeepAlive: %w", err)
			}
		}
		renew := func(id int64) error {
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
		return func(ctx context.Context) (sample, error) {
			start := time.Now()
			granted, err := lease.LeaseGrant(ctx, &etcdserverpb.LeaseGrantRequest{TTL: etcdLeaseTTL})
			if err == nil && granted.GetError() != "" {
				err = fmt.Errorf("LeaseGrant: %s", granted.GetError())
			}
			if err != nil {
				return sample{}, err
			}
			acquired := time.Now()
			renewed := acquired
			if stream != nil {
				if err := renew(granted.GetID()); err != nil {
					return sample{}, err
				}
				renewed = time.Now()
			}
			_, err = lease.LeaseRevoke(ctx, &etcdserverpb.LeaseRevokeRequest{ID: granted.GetID()})
			end := time.Now()
			return sample{total: end.Sub(start), acquire: acquired.Sub(start), renew: renewed.Sub(acquired), release: end.Sub(renewed)}, err
		}, nil
	}
}
