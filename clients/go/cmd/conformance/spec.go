package main

// Scenarios for the rules issue 12 asked the spec to state (docs/protocol.md), beyond the checklist that
// every client passes: they document what the reference worker does, through this client.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
)

var specScenarios = []scenario{
	{"outputs_edge_cases", scenarioOutputsEdgeCases},
	{"nil_handling", scenarioNilHandling},
	{"parameters_bound", scenarioParametersBound},
	{"unreadable_id_answered_under_entry_id", scenarioUnreadableID},
	{"unanswerable_dead_lettered", scenarioUnanswerable},
}

func affineBody(extra ...msgpack.Pair) msgpack.Map {
	t := x(1, 3, 0)
	tensor := msgpack.Map{{Key: "name", Value: t.Name}, {Key: "datatype", Value: string(t.Datatype)},
		{Key: "shape", Value: t.Shape}, {Key: "data", Value: t.Data}}
	return append(msgpack.Map{{Key: "model", Value: "affine"}, {Key: "inputs", Value: []interface{}{tensor}}}, extra...)
}

func sendMap(ctx context.Context, e *env, id string, body msgpack.Map) (*redisinfer.Reply, error) {
	enc, err := msgpack.Marshal(body)
	if err != nil {
		return nil, err
	}
	p, err := e.client.SubmitEncoded(ctx, id, redisinfer.ProtocolVersion, enc, 20*time.Second)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

func outputNames(r *redisinfer.Reply) string {
	var names []string
	for _, t := range r.Outputs {
		names = append(names, t.Name)
	}
	return strings.Join(names, ",")
}

// §3.1: an empty outputs array means all outputs; a name listed twice is accepted, its tensor sent once.
func scenarioOutputsEdgeCases(ctx context.Context, e *env) error {
	r, err := sendMap(ctx, e, "oe-empty", affineBody(msgpack.Pair{Key: "outputs", Value: []interface{}{}}))
	if err != nil {
		return err
	}
	if names := outputNames(r); names != "y,s" && names != "s,y" {
		return fmt.Errorf("outputs [] gave %q, want all (y, s)", names)
	}
	dup := req(x(1, 3, 0))
	dup.Outputs = []string{"s", "s"}
	if r, err = e.client.Do(ctx, dup); err != nil {
		return err
	}
	if names := outputNames(r); names != "s" {
		return fmt.Errorf("outputs [s, s] gave %q, want s once", names)
	}
	return nil
}

// §3.1: nil is absent for timeout_ms, model_version, outputs and parameters; MALFORMED anywhere else.
func scenarioNilHandling(ctx context.Context, e *env) error {
	absent := affineBody(msgpack.Pair{Key: "timeout_ms", Value: nil}, msgpack.Pair{Key: "model_version", Value: nil},
		msgpack.Pair{Key: "outputs", Value: nil}, msgpack.Pair{Key: "parameters", Value: nil})
	if _, err := sendMap(ctx, e, "nil-absent", absent); err != nil {
		return fmt.Errorf("nil optional keys: %w", err)
	}
	bad := map[string]msgpack.Pair{
		"nil-param":    {Key: "parameters", Value: msgpack.Map{{Key: "a", Value: nil}}},
		"nil-priority": {Key: "priority", Value: nil},
		"nil-output":   {Key: "outputs", Value: []interface{}{nil}},
	}
	for id, pair := range bad {
		_, err := sendMap(ctx, e, id, affineBody(pair))
		if _, err := expect(err, redisinfer.ErrMalformed); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
	}
	return nil
}

func params(n int) msgpack.Map {
	m := make(msgpack.Map, n)
	for i := range m {
		m[i] = msgpack.Pair{Key: fmt.Sprintf("p%d", i), Value: i}
	}
	return m
}

// §7: with the defaults, 64 parameters are served, 65 to 256 are TOO_LARGE, 257 or more MALFORMED.
func scenarioParametersBound(ctx context.Context, e *env) error {
	cases := []struct {
		n    int
		want error
	}{{64, nil}, {65, redisinfer.ErrTooLarge}, {256, redisinfer.ErrTooLarge}, {257, redisinfer.ErrMalformed}}
	for _, c := range cases {
		r := req(x(1, 3, 0))
		r.Parameters = params(c.n)
		_, err := e.client.Do(ctx, r)
		if c.want == nil && err != nil {
			return fmt.Errorf("%d parameters: %w", c.n, err)
		}
		if c.want != nil {
			if _, err := expect(err, c.want); err != nil {
				return fmt.Errorf("%d parameters: %w", c.n, err)
			}
		}
	}
	return nil
}
