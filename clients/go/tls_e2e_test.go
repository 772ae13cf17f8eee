package keymesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// These tests run against a real KeyMesh server over TLS at KEYMESH_TLS_ADDR, whose self-signed
// certificate is the PEM file KEYMESH_TLS_CA (scripts/test.sh starts it).

func tlsServer(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	addr, caPath := os.Getenv("KEYMESH_TLS_ADDR"), os.Getenv("KEYMESH_TLS_CA")
	if addr == "" || caPath == "" {
		t.Skip("KEYMESH_TLS_ADDR / KEYMESH_TLS_CA not set: no server over TLS to test against")
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no PEM certificate in %s", caPath)
	}
	return addr, roots
}

func TestTLSAcquireAndReleaseWithTheServersCA(t *testing.T) {
	addr, roots := tlsServer(t)
	c, err := NewClient(addr, WithTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	pool := e2ePool(t, c, "k1")
	ctx := context.Background()
	lease, err := c.Acquire(ctx, &keymeshv1.AcquireRequest{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if lease.GetKeyId() != "k1" || lease.GetKey() != "sk-test-k1" {
		t.Errorf("lease of key %q (%q), want k1 (sk-test-k1)", lease.GetKeyId(), lease.GetKey())
	}
	if _, err := c.Release(ctx, &keymeshv1.ReleaseRequest{LeaseId: lease.GetLeaseId()}); err != nil {
		t.Fatal(err)
	}
	if n := len(liveLeases(t, c, pool)); n != 0 {
		t.Errorf("%d live leases after the release", n)
	}
}

// A hang would end as DeadlineExceeded; the refused certificate is a failed handshake, Unavailable.
func TestTLSWithoutTheCAFailsUnavailableBeforeItsDeadline(t *testing.T) {
	addr, _ := tlsServer(t)
	c, err := NewClient(addr, WithDefaultTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_, err = c.Acquire(context.Background(), &keymeshv1.AcquireRequest{Pool: "any"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("acquire without the CA: %v, want Unavailable naming the certificate", err)
	}
}
