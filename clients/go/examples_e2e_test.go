package keymesh

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
)

// The examples, run as programs against a real server (KEYMESH_ADDR) and the fake provider.

func runExample(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), "KEYMESH_ADDR="+os.Getenv("KEYMESH_ADDR"))
	out, err := cmd.Output()
	return string(out), err
}

func TestE2EQuickstartPrintsTheLeasedLabel(t *testing.T) {
	c := e2eClient(t)
	pool := e2ePool(t, c, "k1")
	out, err := runExample(t, "./examples/quickstart", pool)
	if err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	if out != "leased label-k1\n" {
		t.Errorf("output %q", out)
	}
	if _, err := runExample(t, "./examples/quickstart", "no-such-pool-for-quickstart"); err == nil {
		t.Error("quickstart exited 0 for an unknown pool")
	}
}

// startFakeProvider runs test/fake-provider with keys that allow 2 requests a second each.
func startFakeProvider(t *testing.T, keys ...string) string {
	t.Helper()
	tsx := "../../node_modules/.bin/tsx"
	if _, err := os.Stat(tsx); err != nil {
		t.Skip("node_modules not installed: no fake provider")
	}
	cmd := exec.Command(tsx, "../../test/fake-provider/main.ts", "--port", "0", "--keys", strings.Join(keys, ","), "--rpm-per-key", "2", "--window-ms", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // tsx runs node as a child: stop the whole group
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("fake provider did not start: %v", err)
	}
	var started struct{ URL string }
	if err := json.Unmarshal([]byte(line), &started); err != nil || started.URL == "" {
		t.Fatalf("fake provider said %q", line)
	}
	return started.URL
}

func TestE2EOpenAIStyleLosesNoRequestWhileKeysRotate(t *testing.T) {
	c := e2eClient(t)
	secrets := []string{"sk-fake-a", "sk-fake-b", "sk-fake-c"}
	url := startFakeProvider(t, secrets...)
	pool := e2ePool(t, c)
	for i, s := range secrets {
		_, err := c.AddKey(context.Background(), &keymeshv1.AddKeyRequest{Pool: pool, Secret: s,
			Key: &keymeshv1.Key{Id: fmt.Sprintf("k%d", i), Label: "label-" + s, Metadata: map[string]string{"base_url": url + "/v1"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	out, err := runExample(t, "./examples/openai_style", "-addr", os.Getenv("KEYMESH_ADDR"), "-pool", pool, "-requests", "12")
	if err != nil {
		t.Fatalf("openai_style: %v\n%s", err, out)
	}
	if !strings.Contains(out, "completed 12 requests") {
		t.Errorf("output %q", out)
	}
	resp, err := http.Get(url + "/_fake/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Keys map[string]struct{ OK, Unauthorized int }
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatal(err)
	}
	ok, used := 0, 0
	for _, k := range stats.Keys {
		ok += k.OK
		if k.OK > 0 {
			used++
		}
		if k.Unauthorized > 0 {
			t.Errorf("a request went out with a wrong key: %+v", stats)
		}
	}
	// Each key allows 2 requests a second: 12 in a row only pass by rotating.
	if ok != 12 || used < 2 {
		t.Errorf("provider saw %d successful requests on %d keys, want 12 on several", ok, used)
	}
}
