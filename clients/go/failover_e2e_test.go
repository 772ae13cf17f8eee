package keymesh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Failover against real KeyMesh server processes (the compiled server when built, the sources
// otherwise). By default each has its embedded database in a directory of its own so it can be
// killed and started again on the same port with its leases; replicas share a Postgres database
// and a master key instead.

type keymeshProcess struct {
	t       *testing.T
	env     []string
	port    string
	cmd     *exec.Cmd
	exited  chan struct{}
	dataDir string
}

var listeningLine = regexp.MustCompile(`"grpcPort":(\d+).*"msg":"listening"`)

func startKeyMesh(t *testing.T, env ...string) *keymeshProcess {
	t.Helper()
	if testing.Short() {
		t.Skip("starts server processes")
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	p := &keymeshProcess{t: t, port: "0", dataDir: t.TempDir()}
	p.env = append(append(os.Environ(), "DATABASE_URL=", "KEYMESH_HOST=127.0.0.1", "KEYMESH_HTTP_PORT=0", "KEYMESH_LOG_LEVEL=info",
		"KEYMESH_DATA_DIR="+p.dataDir, "KEYMESH_MASTER_KEY="+base64.StdEncoding.EncodeToString(key)), env...)
	p.start()
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

func (p *keymeshProcess) addr() string { return "127.0.0.1:" + p.port }

func (p *keymeshProcess) start() {
	p.t.Helper()
	root, _ := filepath.Abs("../..")
	node, err := exec.LookPath("node")
	if err != nil {
		p.t.Fatal("node is needed to run a KeyMesh server: ", err)
	}
	args := []string{filepath.Join(root, "server/dist/main.js")}
	if _, err := os.Stat(args[0]); err != nil {
		args = []string{"--import", "tsx", filepath.Join(root, "server/src/main.ts")}
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = root
	cmd.Env = append(p.env, "KEYMESH_GRPC_PORT="+p.port)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.port = <-found:
	case <-p.exited:
		p.t.Fatal("server exited before listening")
	case <-time.After(60 * time.Second):
		p.t.Fatal("server did not start")
	}
}

func (p *keymeshProcess) kill(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	<-p.exited
}

func failoverPools(t *testing.T, p *keymeshProcess) {
	t.Helper()
	c := routedClient(t, p.addr())
	ctx := context.Background()
	for _, step := range []error{
		must(c.CreatePool(ctx, &keymeshv1.CreatePoolRequest{Pool: &keymeshv1.Pool{Name: "fo", MinTtl: durationpb.New(time.Second)}})),
		must(c.AddKey(ctx, &keymeshv1.AddKeyRequest{Pool: "fo", Key: &keymeshv1.Key{Id: "k1", MaxConcurrency: 1}, Secret: "sk-fo-" + p.addr()})),
		must(c.CreatePool(ctx, &keymeshv1.CreatePoolRequest{Pool: &keymeshv1.Pool{Name: "fo-other"}})),
		must(c.AddKey(ctx, &keymeshv1.AddKeyRequest{Pool: "fo-other", Key: &keymeshv1.Key{Id: "k2"}, Secret: "sk-fo-other"})),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
}

func must[T any](_ T, err error) error { return err }

func TestAScopedLeaseSurvivesItsServersKillAndRestart(t *testing.T) {
	a := startKeyMesh(t)
	failoverPools(t, a)
	var warnings bytes.Buffer
	c := routedClient(t, a.addr(), WithLogger(slog.New(slog.NewTextHandler(&warnings, nil))))
	const ttl = 30 * time.Second
	var leaseID string
	duringOutage := make(chan error, 1)
	err := c.WithLease(context.Background(), "fo", func(ctx context.Context, l *Lease) error {
		leaseID = l.LeaseID
		a.kill(syscall.SIGKILL)
		go func() { duringOutage <- c.WithLease(context.Background(), "fo-other", noop) }()
		a.start()
		restarted := time.Now()
		// Renewed by the new process: the stream reopened and re-sent the lease.
		for l.ExpiresAt().Before(restarted.Add(ttl)) {
			time.Sleep(100 * time.Millisecond)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("lease context ended: %w", context.Cause(ctx))
		}
		return nil
	}, TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-duringOutage; err != nil {
		t.Fatalf("Acquire during the outage: %v", err)
	}
	if w := warnings.String(); w != "" {
		t.Errorf("warnings: %s", w)
	}
	_, err = c.Release(context.Background(), &keymeshv1.ReleaseRequest{LeaseId: leaseID})
	if ReasonOf(err) != keymeshv1.ErrorReason_ERROR_REASON_LEASE_RELEASED {
		t.Errorf("second release: %v", err)
	}
}

func TestASecondServerTakesTheCallsWhenTheFirstIsGone(t *testing.T) {
	a, b := startKeyMesh(t), startKeyMesh(t)
	failoverPools(t, a)
	failoverPools(t, b)
	c := routedClient(t, a.addr()+","+b.addr())
	keyOf := func() string {
		var key string
		if err := c.WithLease(context.Background(), "fo", func(_ context.Context, l *Lease) error { key = l.Key; return nil }); err != nil {
			t.Fatal(err)
		}
		return key
	}
	if k := keyOf(); k != "sk-fo-"+a.addr() {
		t.Errorf("first lease from %s", k)
	}
	a.kill(syscall.SIGKILL)
	for range 2 {
		if k := keyOf(); k != "sk-fo-"+b.addr() {
			t.Errorf("lease from %s after the first server died", k)
		}
	}
}

// scratchDatabase creates an empty database on the Postgres of DATABASE_URL (with psql) and drops
// it after the test; it skips the test without DATABASE_URL.
func scratchDatabase(t *testing.T) string {
	t.Helper()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		t.Skip("DATABASE_URL not set: no Postgres for replicas")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "keymesh_go_replicas_" + hex.EncodeToString(suffix)
	admin := *u
	admin.Path = "/postgres"
	psql := func(stmt string) error {
		out, err := exec.Command("psql", admin.String(), "-qc", stmt).CombinedOutput()
		if err != nil {
			return fmt.Errorf("psql %s: %v: %s", stmt, err, out)
		}
		return nil
	}
	if err := psql(`create database "` + name + `"`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = psql(`drop database if exists "` + name + `" with (force)`) })
	u.Path = "/" + name
	return u.String()
}

func TestAScopedLeaseSurvivesTheKillOfItsPoolsOwner(t *testing.T) {
	db := scratchDatabase(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	env := []string{"DATABASE_URL=" + db, "KEYMESH_MASTER_KEY=" + base64.StdEncoding.EncodeToString(key),
		"KEYMESH_OWNERSHIP_TTL=3000ms", "KEYMESH_SNAPSHOT_INTERVAL=200ms"}
	replicas := []*keymeshProcess{startKeyMesh(t, env...), startKeyMesh(t, env...)}
	ctx := context.Background()
	one := routedClient(t, replicas[0].addr())
	if _, err := one.CreatePool(ctx, &keymeshv1.CreatePoolRequest{Pool: &keymeshv1.Pool{Name: "rp"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := one.AddKey(ctx, &keymeshv1.AddKeyRequest{Pool: "rp", Key: &keymeshv1.Key{Id: "k1", MaxConcurrency: 1}, Secret: "sk-rp-k1"}); err != nil {
		t.Fatal(err)
	}
	var header metadata.MD
	if _, err := one.GetPoolStats(ctx, &keymeshv1.GetPoolStatsRequest{Pool: "rp"}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	var victim *keymeshProcess
	for _, r := range replicas {
		if r.addr() == first(header.Get(ownerHeader)) {
			victim = r
		}
	}
	if victim == nil {
		t.Skip("the server names no owner: it runs without replicas")
	}
	var warnings bytes.Buffer
	c := routedClient(t, replicas[0].addr()+","+replicas[1].addr(), WithLogger(slog.New(slog.NewTextHandler(&warnings, nil))))
	const ttl = 20 * time.Second
	err := c.WithLease(ctx, "rp", func(ctx context.Context, l *Lease) error {
		victim.kill(syscall.SIGKILL)
		killed := time.Now()
		// Renewed after the crash: through the survivor, once it took the pool over.
		for deadline := killed.Add(time.Minute); !l.ExpiresAt().After(killed.Add(ttl)); {
			if time.Now().After(deadline) {
				return fmt.Errorf("no renewal after the crash")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("lease context ended: %w", context.Cause(ctx))
		}
		return nil
	}, TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WithLease(ctx, "rp", noop); err != nil {
		t.Fatalf("a lease after the takeover: %v", err)
	}
	if w := warnings.String(); w != "" {
		t.Errorf("warnings: %s", w)
	}
}
