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
	"strings"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is a connection to a KeyMesh server. It embeds the generated clients, so every RPC of
// KeyPoolService and PoolAdminService is a method of Client.
type Client struct {
	keymeshv1.KeyPoolServiceClient
	keymeshv1.PoolAdminServiceClient

	conn           *grpc.ClientConn
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

// NewClient connects lazily to the server at addr ("host:port"). Without WithInsecure the
// connection uses TLS (system roots unless WithTLS says otherwise).
func NewClient(addr string, opts ...Option) (*Client, error) {
	cfg := clientConfig{defaultTimeout: 10 * time.Second, log: slog.Default()}
	for _, opt := range opts {
		opt(&cfg)
	}
	dial := []grpc.DialOption{grpc.WithChainUnaryInterceptor(defaultTimeoutInterceptor(cfg.defaultTimeout))}
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
		if cfg.insecure && !isLoopback(addr) {
			return nil, ErrTokenOverPlaintext
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearerToken{token: cfg.token, requireTLS: !cfg.insecure}))
	}
	conn, err := grpc.NewClient(addr, append(dial, cfg.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	pool := keymeshv1.NewKeyPoolServiceClient(conn)
	return &Client{
		KeyPoolServiceClient:   pool,
		PoolAdminServiceClient: keymeshv1.NewPoolAdminServiceClient(conn),
		conn:                   conn,
		defaultTimeout:         cfg.defaultTimeout,
		keeper:                 newKeeper(pool),
		log:                    cfg.log,
	}, nil
}

// Close closes the connection; leases still held are reclaimed by the server at their expiry.
func (c *Client) Close() error { return c.conn.Close() }

type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

func defaultTimeoutInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

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
