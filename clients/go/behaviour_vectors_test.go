package keymesh

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func loadVectors(t *testing.T, name string, into any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		t.Fatal(err)
	}
}

func millis(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// grpcCode is the gRPC status code of a canonical name ("RESOURCE_EXHAUSTED").
func grpcCode(t *testing.T, name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if canonicalCode(c) == name {
			return c
		}
	}
	t.Fatalf("unknown code %q", name)
	return codes.Unknown
}

// canonicalCode is a code's canonical name: codes.ResourceExhausted -> "RESOURCE_EXHAUSTED".
func canonicalCode(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func serverError(t *testing.T, code, reason string, retryAfterMs *int64, field string) error {
	st := status.New(grpcCode(t, code), "scripted")
	if reason == "" {
		return st.Err()
	}
	d := &keymeshv1.ErrorDetail{Reason: reasonValue(reason), Field: field}
	if retryAfterMs != nil {
		d.RetryAfter = durationpb.New(millis(*retryAfterMs))
	}
	st, err := st.WithDetails(d)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

type retryStep struct {
	Acquire *struct {
		Exclude []string `json:"exclude"`
		WaitMs  int64    `json:"wait_ms"`
	} `json:"acquire,omitempty"`
	Lend *string `json:"lend,omitempty"`
	Fail *struct {
		Code   string `json:"code"`
		Reason string `json:"reason"`
	} `json:"fail,omitempty"`
	ElapsedMs    int64  `json:"elapsed_ms,omitempty"`
	Call         string `json:"call,omitempty"`
	Outcome      string `json:"outcome,omitempty"`
	RetryAfterMs *int64 `json:"retry_after_ms,omitempty"`
	SleepMs      *int64 `json:"sleep_ms,omitempty"`
}

type fakeRetrySteps struct {
	t          *testing.T
	clock      time.Time
	script     []retryStep
	rnd        float64
	actions    []string
	callErr    error
	acquireErr error
}

func (f *fakeRetrySteps) next() retryStep {
	if len(f.script) == 0 {
		return retryStep{}
	}
	s := f.script[0]
	f.script = f.script[1:]
	return s
}

func (f *fakeRetrySteps) acquire(exclude []string, wait time.Duration) (*Lease, error) {
	s := f.next()
	f.actions = append(f.actions, "acquire "+strings.Join(exclude, ",")+" wait "+wait.String())
	f.clock = f.clock.Add(millis(s.ElapsedMs))
	if s.Lend != nil {
		return &Lease{KeyID: *s.Lend}, nil
	}
	code, reason := "INTERNAL", ""
	if s.Fail != nil {
		code, reason = s.Fail.Code, s.Fail.Reason
	}
	f.acquireErr = serverError(f.t, code, reason, nil, "")
	return nil, f.acquireErr
}

func (f *fakeRetrySteps) run(l *Lease) (Outcome, error) {
	s := f.next()
	f.actions = append(f.actions, "call "+l.KeyID)
	o := Outcome{Kind: Kind(s.Outcome)}
	if s.RetryAfterMs != nil {
		d := millis(*s.RetryAfterMs)
		o.RateLimit.RetryAfter = &d
	}
	if o.Kind == Success || o.Kind == "" {
		return o, nil
	}
	return o, f.callErr
}

func (f *fakeRetrySteps) now() time.Time  { return f.clock }
func (f *fakeRetrySteps) random() float64 { return f.rnd }
func (f *fakeRetrySteps) sleep(d time.Duration) error {
	f.next()
	f.actions = append(f.actions, "sleep "+d.String())
	f.clock = f.clock.Add(d)
	return nil
}

func TestRetryVectors(t *testing.T) {
	var v struct {
		Defaults struct {
			BudgetMs      int64    `json:"budget_ms"`
			WaitMs        int64    `json:"wait_ms"`
			Exclude       []string `json:"exclude"`
			BackoffBaseMs int64    `json:"backoff_base_ms"`
			BackoffCapMs  int64    `json:"backoff_cap_ms"`
			Random        float64  `json:"random"`
		} `json:"defaults"`
		Cases []struct {
			Name     string      `json:"name"`
			BudgetMs *int64      `json:"budget_ms"`
			WaitMs   *int64      `json:"wait_ms"`
			Exclude  []string    `json:"exclude"`
			Script   []retryStep `json:"script"`
			Result   string      `json:"result"`
		} `json:"cases"`
	}
	loadVectors(t, "retry.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			d := v.Defaults
			p := retryPolicy{budget: millis(d.BudgetMs), wait: millis(d.WaitMs), exclude: d.Exclude, backoffBase: millis(d.BackoffBaseMs), backoffCap: millis(d.BackoffCapMs)}
			if c.BudgetMs != nil {
				p.budget = millis(*c.BudgetMs)
			}
			if c.WaitMs != nil {
				p.wait = millis(*c.WaitMs)
			}
			if c.Exclude != nil {
				p.exclude = c.Exclude
			}
			f := &fakeRetrySteps{t: t, clock: time.Unix(0, 0), script: slices.Clone(c.Script), rnd: d.Random, callErr: errors.New("the call failed")}
			err := retryLoop(f, p)
			result := "success"
			switch {
			case err == nil:
			case errors.Is(err, f.callErr):
				result = "last_call"
			case err == f.acquireErr:
				result = "acquire_error"
			default:
				result = "unexpected: " + err.Error()
			}
			var want []string
			for _, s := range c.Script {
				switch {
				case s.Acquire != nil:
					want = append(want, "acquire "+strings.Join(s.Acquire.Exclude, ",")+" wait "+millis(s.Acquire.WaitMs).String())
				case s.Call != "":
					want = append(want, "call "+s.Call)
				default:
					want = append(want, "sleep "+millis(*s.SleepMs).String())
				}
			}
			if !reflect.DeepEqual(f.actions, want) || result != c.Result {
				t.Errorf("actions %q result %s\nwant    %q result %s", f.actions, result, want, c.Result)
			}
		})
	}
}

func TestKeepAliveVectors(t *testing.T) {
	type lease struct {
		LeaseID         string `json:"lease_id"`
		TTLMs           int64  `json:"ttl_ms"`
		RenewIntervalMs int64  `json:"renew_interval_ms"`
	}
	var v struct {
		Cases []struct {
			Name  string `json:"name"`
			Steps []struct {
				AtMs    int64  `json:"at_ms"`
				Hold    *lease `json:"hold"`
				Renewed *lease `json:"renewed"`
				Release string `json:"release"`
				Break   string `json:"break"`
				Gone    *struct {
					LeaseID string `json:"lease_id"`
					Reason  string `json:"reason"`
				} `json:"gone"`
				Expect *struct {
					Stream *string           `json:"stream"`
					Opened *int              `json:"opened"`
					Sent   []string          `json:"sent"`
					Ended  map[string]string `json:"ended"`
				} `json:"expect"`
			} `json:"steps"`
		} `json:"cases"`
	}
	loadVectors(t, "keepalive.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no cases")
	}
	states := map[streamState]string{streamClosed: "closed", streamOpen: "open", streamBroken: "broken"}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			start := time.Unix(0, 0)
			ended := map[string]string{}
			r := newRenewals(func(l *Lease, reason, _ string) { ended[l.LeaseID] = reason })
			now, opened, sent := start, 0, []string{}
			var wake time.Time
			drive := func() {
				s := r.step(now)
				if s.open {
					opened++
				}
				for _, l := range s.send {
					sent = append(sent, l.LeaseID)
				}
				wake = s.wake
			}
			for _, step := range c.Steps {
				at := start.Add(millis(step.AtMs))
				for !wake.IsZero() && !wake.After(at) {
					now = wake
					drive()
				}
				now = at
				poke := true
				switch {
				case step.Hold != nil:
					poke = r.hold(&Lease{LeaseID: step.Hold.LeaseID}, millis(step.Hold.TTLMs), millis(step.Hold.RenewIntervalMs), now)
				case step.Release != "":
					poke = r.release(step.Release)
				case step.Renewed != nil:
					r.renewed(step.Renewed.LeaseID, millis(step.Renewed.TTLMs), millis(step.Renewed.RenewIntervalMs), now)
				case step.Gone != nil:
					r.gone(step.Gone.LeaseID, step.Gone.Reason, "")
				case step.Break != "":
					r.broken(now)
				}
				if poke {
					drive()
				}
				if e := step.Expect; e != nil {
					wantSent := append([]string{}, e.Sent...)
					sort.Strings(wantSent)
					sort.Strings(sent)
					wantEnded := e.Ended
					if wantEnded == nil {
						wantEnded = map[string]string{}
					}
					if !slices.Equal(sent, wantSent) || !reflect.DeepEqual(ended, wantEnded) ||
						(e.Stream != nil && *e.Stream != states[r.state]) || (e.Opened != nil && *e.Opened != opened) {
						t.Errorf("at %d ms: sent %v ended %v stream %s opened %d; want sent %v ended %v stream %v opened %v",
							step.AtMs, sent, ended, states[r.state], opened, wantSent, wantEnded, deref(e.Stream), deref(e.Opened))
					}
					sent, ended = []string{}, map[string]string{}
				}
			}
		})
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "(any)"
	}
	return *p
}

func TestVocabularyVectors(t *testing.T) {
	var v struct {
		LeaseFields []string `json:"lease_fields"`
		Outcomes    []string `json:"outcomes"`
		Errors      []struct {
			Name   string `json:"name"`
			Status struct {
				Code   string `json:"code"`
				Detail *struct {
					Reason       string `json:"reason"`
					RetryAfterMs *int64 `json:"retry_after_ms"`
					Field        string `json:"field"`
				} `json:"detail"`
			} `json:"status"`
			Expect struct {
				Code         string `json:"code"`
				Reason       string `json:"reason"`
				RetryAfterMs *int64 `json:"retry_after_ms"`
				Field        string `json:"field"`
			} `json:"expect"`
		} `json:"errors"`
	}
	loadVectors(t, "vocabulary.json", &v)
	leaseType := reflect.TypeOf(&Lease{})
	for _, f := range v.LeaseFields {
		name := goName(f)
		_, isField := leaseType.Elem().FieldByName(name)
		_, isMethod := leaseType.MethodByName(name)
		if !isField && !isMethod {
			t.Errorf("Lease has no %s (%s)", name, f)
		}
	}
	kinds := []string{string(Success), string(RateLimited), string(Auth), string(QuotaExhausted), string(Transient), string(Overloaded), string(ClientError)}
	if !slices.Equal(kinds, v.Outcomes) {
		t.Errorf("outcome kinds %v, want %v", kinds, v.Outcomes)
	}
	for _, c := range v.Errors {
		t.Run(c.Name, func(t *testing.T) {
			var err error
			if d := c.Status.Detail; d != nil {
				err = serverError(t, c.Status.Code, d.Reason, d.RetryAfterMs, d.Field)
			} else {
				err = serverError(t, c.Status.Code, "", nil, "")
			}
			got := struct {
				Code, Reason, Field string
				RetryAfterMs        *int64
			}{canonicalCode(status.Code(err)), reasonName(ReasonOf(err)), ErrorDetailOf(err).GetField(), nil}
			if ra, ok := RetryAfter(err); ok {
				n := ra.Milliseconds()
				got.RetryAfterMs = &n
			}
			if got.Code != c.Expect.Code || got.Reason != c.Expect.Reason || got.Field != c.Expect.Field || !reflect.DeepEqual(got.RetryAfterMs, c.Expect.RetryAfterMs) {
				t.Errorf("got %+v, want %+v", got, c.Expect)
			}
		})
	}
}

// goName is a vocabulary name in Go's spelling: "lease_id" -> "LeaseID", "key_label" -> "KeyLabel".
func goName(snake string) string {
	var b strings.Builder
	for _, part := range strings.Split(snake, "_") {
		if part == "id" {
			b.WriteString("ID")
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}
