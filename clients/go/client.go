// Package keymesh is the Go client of KeyMesh: the generated gRPC stubs plus a thin layer that
// makes the right thing easy — lease a key, renew it while in use, report the outcome, always
// end the lease.
package keymesh

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is a connection to a KeyMesh server or to several replicas. It embeds the generated
// clients, so every RPC of KeyPoolService and PoolAdminService is a method of Client.
type Client struct {
	keymeshv1.KeyPoolServiceClient
	keymeshv1.PoolAdminServiceClient

	router         *router
	defaultTimeout time.Duration
	keeper         *keeper
	log            *slog.Logger
}

// Option configures NewClient.
type Option func(*clientConfig)

type clientConfig struct {
	tls            *tls.Config
	insecure       bool
	token          string
	defaultTimeout time.Duration
	dialOptions    []grpc.DialOption
	log            *slog.Logger
}

// WithTLS connects over TLS with the given configuration (nil: the system roots).
func WithTLS(cfg *tls.Config) Option {
	return func(c *clientConfig) { c.tls = cfg; c.insecure = false }
}

// WithInsecure connects over plaintext HTTP/2; meant for loopback and trusted networks.
func WithInsecure() Option {
	return func(c *clientConfig) { c.insecure = true }
}

// WithBearerToken sends "authorization: Bearer <token>" on every RPC. Over plaintext it is only
// allowed to a loopback address, so a token never crosses a network in the clear.
func WithBearerToken(token string) Option {
	return func(c *clientConfig) { c.token = token }
}

// WithDefaultTimeout bounds every unary RPC whose context has no deadline (default 10s).
func WithDefaultTimeout(d time.Duration) Option {
	return func(c *clientConfig) { c.defaultTimeout = d }
}

// WithLogger receives the warnings of the lease helpers, e.g. a lease whose final report failed
// (default slog.Default()). Keys are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *clientConfig) { c.log = l }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors, keepalive, …).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *clientConfig) { c.dialOptions = append(c.dialOptions, opts...) }
}

// ErrTokenOverPlaintext is returned by NewClient for a bearer token over plaintext to a
// non-loopback address.
var ErrTokenOverPlaintext = errors.New("keymesh: bearer token over plaintext is only allowed to a loopback address")

// NewClient connects lazily to the server at target: "host:port", or several replicas
// "host1:port,host2:port". A host name stands for every address it resolves to (at the first
// call), each an endpoint. A call goes to its pool's owner once a replica named it (the
// keymesh-owner header), else to the current endpoint, and moves to the next endpoint on
// UNAVAILABLE (test/vectors/failover.json); the KeepAlive stream moves on when it breaks. A target
// with a scheme ("dns:///…", "unix:…") is handed to grpc as one endpoint. Without WithInsecure
// the connections use TLS (system roots unless WithTLS says otherwise).
func NewClient(target string, opts ...Option) (*Client, error) {
	cfg := clientConfig{defaultTimeout: 10 * time.Second, log: slog.Default()}
	for _, opt := range opts {
		opt(&cfg)
	}
	seeds, err := splitTargets(target)
	if err != nil {
		return nil, err
	}
	// Reconnect soon after a replica comes back (grpc's default backoff starts at 1s and grows to 2 minutes).
	dial := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})}
	if cfg.insecure {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		tlsCfg := cfg.tls
		if tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	}
	if cfg.token != "" {
		for _, s := range seeds {
			if cfg.insecure && !isLoopback(s) {
				return nil, ErrTokenOverPlaintext
			}
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearerToken{token: cfg.token, requireTLS: !cfg.insecure}))
	}
	dial = append(dial, cfg.dialOptions...)
	r := &router{
		seeds: seeds,
		dial: func(target string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
			return grpc.NewClient(target, append(slices.Clip(dial), extra...)...)
		},
		// A token never crosses a network in the clear, whichever replica a header names.
		mayFollow:      func(hostPort string) bool { return !cfg.insecure || cfg.token == "" || isLoopback(hostPort) },
		lookup:         net.DefaultResolver.LookupIPAddr,
		defaultTimeout: cfg.defaultTimeout,
		backoffBase:    100 * time.Millisecond,
		backoffCap:     5 * time.Second,
		conns:          map[string]*grpc.ClientConn{},
	}
	pool := keymeshv1.NewKeyPoolServiceClient(r)
	return &Client{
		KeyPoolServiceClient:   pool,
		PoolAdminServiceClient: keymeshv1.NewPoolAdminServiceClient(r),
		router:                 r,
		defaultTimeout:         cfg.defaultTimeout,
		keeper:                 newKeeper(pool),
		log:                    cfg.log,
	}, nil
}

// Close closes the connections; leases still held are reclaimed by the server at their expiry.
func (c *Client) Close() error { return c.router.close() }

type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

func isLoopback(addr string) bool {
	// A target may carry a resolver scheme ("dns:///127.0.0.1:50051"); the host is after it.
	if i := strings.LastIndex(addr, "/"); i >= 0 {
		addr = addr[i+1:]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
