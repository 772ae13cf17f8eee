package keymesh

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type failoverAttempt struct {
	Expect    string `json:"expect,omitempty"`
	Answer    string `json:"answer,omitempty"`
	Owner     string `json:"owner,omitempty"`
	ElapsedMs int64  `json:"elapsed_ms,omitempty"`
	SleepMs   int64  `json:"sleep_ms,omitempty"`
}

type failoverStep struct {
	Call *struct {
		Pool *string `json:"pool"`
	} `json:"call,omitempty"`
	Attempts    []failoverAttempt `json:"attempts,omitempty"`
	Result      string            `json:"result,omitempty"`
	StreamOpen  string            `json:"stream_open,omitempty"`
	StreamBreak string            `json:"stream_break,omitempty"`
}

type failoverVectors struct {
	Defaults struct {
		DeadlineMs    int64   `json:"deadline_ms"`
		BackoffBaseMs int64   `json:"backoff_base_ms"`
		BackoffCapMs  int64   `json:"backoff_cap_ms"`
		Random        float64 `json:"random"`
	} `json:"defaults"`
	Cases []struct {
		Name       string         `json:"name"`
		Endpoints  []string       `json:"endpoints"`
		DeadlineMs *int64         `json:"deadline_ms"`
		Steps      []failoverStep `json:"steps"`
	} `json:"cases"`
}

// scriptedEndpoints answers each attempt from the case's script and records what the loop did.
type scriptedEndpoints struct {
	clock    *time.Time
	script   []failoverAttempt
	played   []failoverAttempt
	randomV  float64
	codeByNm map[string]codes.Code
}

func (s *scriptedEndpoints) next() failoverAttempt {
	if len(s.script) == 0 {
		return failoverAttempt{Answer: "OK"}
	}
	a := s.script[0]
	s.script = s.script[1:]
	return a
}

func (s *scriptedEndpoints) attempt(endpoint string) (string, error) {
	a := s.next()
	played := a
	played.Expect = endpoint
	s.played = append(s.played, played)
	*s.clock = s.clock.Add(time.Duration(a.ElapsedMs) * time.Millisecond)
	if a.Answer == "OK" {
		return a.Owner, nil
	}
	return a.Owner, status.Error(s.codeByNm[a.Answer], "scripted")
}

func (s *scriptedEndpoints) refresh()        {}
func (s *scriptedEndpoints) now() time.Time  { return *s.clock }
func (s *scriptedEndpoints) random() float64 { return s.randomV }
func (s *scriptedEndpoints) sleep(d time.Duration) error {
	s.next()
	s.played = append(s.played, failoverAttempt{SleepMs: d.Milliseconds()})
	*s.clock = s.clock.Add(d)
	return nil
}

func TestFailoverVectors(t *testing.T) {
	var v failoverVectors
	readVectors(t, "failover.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no cases")
	}
	codeByName := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		codeByName[canonicalCode(c)] = c
	}
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			e := newEndpoints(c.Endpoints)
			clock := time.Unix(0, 0)
			deadlineMs := v.Defaults.DeadlineMs
			if c.DeadlineMs != nil {
				deadlineMs = *c.DeadlineMs
			}
			var streamOn string
			var played []failoverStep
			for _, step := range c.Steps {
				switch {
				case step.StreamOpen != "":
					streamOn = e.currentEndpoint()
					played = append(played, failoverStep{StreamOpen: streamOn})
				case step.StreamBreak != "":
					e.streamEnded(streamOn)
					played = append(played, failoverStep{StreamBreak: step.StreamBreak})
				default:
					pool := ""
					if step.Call.Pool != nil {
						pool = *step.Call.Pool
					}
					s := &scriptedEndpoints{clock: &clock, script: step.Attempts, randomV: v.Defaults.Random, codeByNm: codeByName}
					err := withFailover(e, pool, clock.Add(ms(deadlineMs)), s, ms(v.Defaults.BackoffBaseMs), ms(v.Defaults.BackoffCapMs))
					result := "OK"
					if err != nil {
						result = canonicalCode(status.Code(err))
					}
					played = append(played, failoverStep{Call: step.Call, Attempts: s.played, Result: result})
				}
			}
			if !reflect.DeepEqual(played, c.Steps) {
				t.Errorf("played:\n%+v\nwant:\n%+v", dump(played), dump(c.Steps))
			}
		})
	}
}

func dump(steps []failoverStep) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		switch {
		case s.Call != nil:
			out[i] = "call " + s.Result
			for _, a := range s.Attempts {
				out[i] += " " + a.Expect + "=" + a.Answer + "/" + a.Owner
				if a.SleepMs != 0 {
					out[i] += " sleep " + time.Duration(a.SleepMs*int64(time.Millisecond)).String()
				}
			}
		default:
			out[i] = "stream " + s.StreamOpen + s.StreamBreak
		}
	}
	return out
}
