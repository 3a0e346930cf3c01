package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// x is the affine model's input: rows × d values base, base+1, ...
func x(rows, d int, base float32) redisinfer.Tensor {
	values := make([]float32, rows*d)
	for i := range values {
		values[i] = base + float32(i)
	}
	return redisinfer.MustTensor("x", []int64{int64(rows), int64(d)}, values)
}

func req(inputs ...redisinfer.Tensor) redisinfer.Request {
	return redisinfer.Request{Inputs: inputs}
}

// expect checks that err is the typed error of a status (errors.Is and errors.As both), carrying the
// worker's reply unless the status is the client's own (BUSY, TIMEOUT).
func expect(err error, want error) (*redisinfer.StatusError, error) {
	if err == nil {
		return nil, fmt.Errorf("expected %v, got success", want)
	}
	var se *redisinfer.StatusError
	if !errors.Is(err, want) || !errors.As(err, &se) {
		return nil, fmt.Errorf("expected %v, got %w", want, err)
	}
	if se.Status != redisinfer.StatusBusy && se.Status != redisinfer.StatusTimeout &&
		(se.Reply == nil || se.Reply.ID != se.ID || se.Reply.Status != se.Status) {
		return nil, fmt.Errorf("%v without its reply: %+v", want, se)
	}
	return se, nil
}

// sendRaw adds an encoded body under id with version v and waits for the outcome.
func sendRaw(ctx context.Context, e *env, id, v string, body []byte) error {
	p, err := e.client.SubmitEncoded(ctx, id, v, body, 20*time.Second)
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

func scenarioOK(ctx context.Context, e *env) error {
	r := req(x(2, 3, 0))
	r.Timeout = 10 * time.Second
	out, err := e.client.Infer(ctx, r)
	if err != nil {
		return err
	}
	y, err := out["y"].Float32s()
	if err != nil {
		return err
	}
	if want := []float32{1, 3, 5, 7, 9, 11}; !reflect.DeepEqual(y, want) || !reflect.DeepEqual(out["y"].Shape, []int64{2, 3}) {
		return fmt.Errorf("y = %v %v, want %v [2 3]", y, out["y"].Shape, want)
	}
	s, err := out["s"].Float32s()
	if err != nil || !reflect.DeepEqual(s, []float32{3, 12}) {
		return fmt.Errorf("s = %v, %v", s, err)
	}
	return nil
}

func scenarioTiming(ctx context.Context, e *env) error {
	reply, err := e.client.Do(ctx, req(x(1, 3, 0)))
	if err != nil {
		return err
	}
	t := reply.Timing
	for name, v := range map[string]int64{"enqueued": t.EnqueuedNs, "read": t.ReadNs, "batched": t.BatchedNs,
		"compute_start": t.ComputeStartNs, "compute_end": t.ComputeEndNs, "published": t.PublishedNs} {
		if v < 1e18 { // nanoseconds since 1970: 2001 or later
			return fmt.Errorf("%s_ns = %d is not a wall-clock time in ns", name, v)
		}
	}
	if t.PublishedNs-t.EnqueuedNs <= 0 || t.ComputeEndNs < t.ComputeStartNs || t.BatchedNs < t.ReadNs {
		return fmt.Errorf("timing out of order: %+v", t)
	}
	return nil
}

func scenarioOutputsSubset(ctx context.Context, e *env) error {
	r := req(x(1, 3, 0))
	r.Outputs = []string{"s"}
	reply, err := e.client.Do(ctx, r)
	if err != nil {
		return err
	}
	if len(reply.Outputs) != 1 || reply.Outputs[0].Name != "s" {
		return fmt.Errorf("outputs %+v, want only s", reply.Outputs)
	}
	return nil
}

func scenarioBatching(ctx context.Context, e *env) error {
	reqs := make([]redisinfer.Request, 32)
	for i := range reqs {
		reqs[i] = req(x(1, 3, float32(i)))
		reqs[i].Timeout = 20 * time.Second
	}
	pending, err := e.client.SubmitMany(ctx, reqs)
	if err != nil {
		return err
	}
	biggest := int64(0)
	for i, p := range pending {
		reply, err := p.Wait(ctx)
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		y, _ := reply.Output("y")
		values, err := y.Float32s()
		if err != nil || values[0] != float32(2*i+1) {
			return fmt.Errorf("reply %d mismatched: %v, %v", i, values, err)
		}
		if reply.BatchSize > biggest {
			biggest = reply.BatchSize
		}
	}
	if biggest < 2 {
		return errors.New("32 pipelined requests never shared a batch")
	}
	return nil
}

func scenarioInvalidArgument(ctx context.Context, e *env) error {
	wrongName := x(1, 3, 0)
	wrongName.Name = "nope"
	if _, err := expect(doErr(ctx, e, req(wrongName)), redisinfer.ErrInvalidArgument); err != nil {
		return err
	}
	short := x(1, 3, 0)
	short.Data = make([]byte, 5)
	if _, err := e.client.Submit(ctx, req(short)); !errors.Is(err, redisinfer.ErrInvalidInput) {
		return fmt.Errorf("5 data bytes for [1 3] FP32: the client sent it (%v)", err)
	}
	body, err := redisinfer.EncodeBody(redisinfer.Request{Model: "affine", Inputs: []redisinfer.Tensor{short}})
	if err != nil {
		return err
	}
	_, err = expect(sendRaw(ctx, e, "ia-short", redisinfer.ProtocolVersion, body), redisinfer.ErrInvalidArgument)
	return err
}

func doErr(ctx context.Context, e *env, r redisinfer.Request) error {
	_, err := e.client.Do(ctx, r)
	return err
}

func scenarioModelNotFound(ctx context.Context, e *env) error {
	r := req(x(1, 3, 0))
	r.Model = "no-such-model"
	se, err := expect(doErr(ctx, e, r), redisinfer.ErrModelNotFound)
	if err != nil {
		return err
	}
	if se.Reply.ID == "" {
		return errors.New("no id")
	}
	return nil
}

func scenarioMalformed(ctx context.Context, e *env) error {
	floatShape := msgpack.Map{{Key: "model", Value: "affine"}, {Key: "inputs", Value: []interface{}{msgpack.Map{
		{Key: "name", Value: "x"}, {Key: "datatype", Value: "FP32"}, {Key: "shape", Value: []interface{}{1.0, 3}},
		{Key: "data", Value: make([]byte, 12)}}}}}
	bodies := []interface{}{[]interface{}{1, 2}, msgpack.Map{{Key: "model", Value: "affine"}}, floatShape}
	raw := [][]byte{{0xc1}}
	for _, b := range bodies {
		enc, err := msgpack.Marshal(b)
		if err != nil {
			return err
		}
		raw = append(raw, enc)
	}
	for i, body := range raw {
		if _, err := expect(sendRaw(ctx, e, fmt.Sprintf("m%d", i+1), "1", body), redisinfer.ErrMalformed); err != nil {
			return fmt.Errorf("body %d: %w", i+1, err)
		}
	}
	return nil
}

func scenarioUnsupportedVersion(ctx context.Context, e *env) error {
	body, err := redisinfer.EncodeBody(req(redisinfer.MustTensor("x", []int64{1, 1}, []float32{0})))
	if err != nil {
		return err
	}
	for i, v := range []string{"2", "01", " 1"} {
		if _, err := expect(sendRaw(ctx, e, fmt.Sprintf("uv-%d", i), v, body), redisinfer.ErrUnsupportedVersion); err != nil {
			return fmt.Errorf("v %q: %w", v, err)
		}
	}
	return nil
}

func scenarioTooLarge(ctx context.Context, e *env) error {
	t := redisinfer.Tensor{Name: "x", Datatype: redisinfer.FP32, Shape: []int64{1 << 32, 1}, Data: make([]byte, 4)}
	body, err := redisinfer.EncodeBody(redisinfer.Request{Model: "affine", Inputs: []redisinfer.Tensor{t}})
	if err != nil {
		return err
	}
	_, err = expect(sendRaw(ctx, e, "tl-1", redisinfer.ProtocolVersion, body), redisinfer.ErrTooLarge)
	return err
}

func scenarioExpired(ctx context.Context, e *env) error {
	r := req(x(1, 3, 0))
	r.Timeout = time.Millisecond
	se, err := expect(doErr(ctx, e, r), redisinfer.ErrExpired)
	if err != nil {
		return err
	}
	t := se.Reply.Timing
	if t.ComputeStartNs != 0 || t.ComputeEndNs != 0 || t.EnqueuedNs <= 0 {
		return fmt.Errorf("EXPIRED timing %+v", t)
	}
	if t.ReadNs-t.ComputeStartNs <= 0 {
		return errors.New("not subtractable")
	}
	return nil
}

func scenarioClientTimeout(ctx context.Context, e *env) error {
	other, err := redisinfer.Dial(ctx, e.url, redisinfer.Config{Model: "affine", Stream: e.stream + ":nobody"})
	if err != nil {
		return err
	}
	defer other.Close()
	r := req(x(1, 3, 0))
	r.Wait = 200 * time.Millisecond
	_, err = expect(doWith(ctx, other, r), redisinfer.ErrTimeout)
	return err
}

func doWith(ctx context.Context, c *redisinfer.Client, r redisinfer.Request) error {
	_, err := c.Do(ctx, r)
	return err
}

func scenarioBusy(ctx context.Context, e *env) error {
	s := e.stream + ":busy"
	raw, err := resp.Dial(ctx, resp.Options{Addr: e.addr})
	if err != nil {
		return err
	}
	defer raw.Close()
	if _, err := raw.Do(ctx, "HSET", s+":limits", "max_backlog", "1"); err != nil {
		return err
	}
	if _, err := raw.Do(ctx, "XADD", s, "*", "filler", "1"); err != nil {
		return err
	}
	before, err := raw.Do(ctx, "XLEN", s)
	if err != nil {
		return err
	}
	other, err := redisinfer.Dial(ctx, e.url, redisinfer.Config{Model: "affine", Stream: s})
	if err != nil {
		return err
	}
	defer other.Close()
	if _, err := other.Submit(ctx, req(x(1, 3, 0))); err != nil {
		if _, err := expect(err, redisinfer.ErrBusy); err != nil {
			return err
		}
	} else {
		return errors.New("submitted past max_backlog")
	}
	n, err := raw.Do(ctx, "XLEN", s)
	if err != nil || n != before {
		return fmt.Errorf("busy request was added anyway: XLEN %v then %v, %v", before, n, err)
	}
	return nil
}

func scenarioHostile(ctx context.Context, e *env) error {
	str, _ := msgpack.Marshal("x")
	inputsStr, _ := msgpack.Marshal(msgpack.Map{{Key: "inputs", Value: "x"}})
	huge := make([]byte, 1000)
	for i := range huge {
		huge[i] = 0xdf // map32 headers all the way down
	}
	for i, body := range [][]byte{{}, huge, str, inputsStr} {
		if _, err := expect(sendRaw(ctx, e, fmt.Sprintf("h%d", i), "1", body), redisinfer.ErrMalformed); err != nil {
			return fmt.Errorf("hostile body %d: %w", i, err)
		}
	}
	return scenarioOK(ctx, e)
}

func scenarioCloseDeletes(ctx context.Context, e *env) error {
	other, err := redisinfer.Dial(ctx, e.url, redisinfer.Config{Model: "affine", Stream: e.stream})
	if err != nil {
		return err
	}
	if _, err := other.Infer(ctx, req(x(1, 3, 0))); err != nil {
		_ = other.Close()
		return err
	}
	raw, err := resp.Dial(ctx, resp.Options{Addr: e.addr})
	if err != nil {
		return err
	}
	defer raw.Close()
	if n, err := raw.Do(ctx, "EXISTS", other.ReplyTo()); err != nil || n != int64(1) {
		return fmt.Errorf("no reply stream while open: %v, %v", n, err)
	}
	if err := other.Close(); err != nil {
		return err
	}
	if n, err := raw.Do(ctx, "EXISTS", other.ReplyTo()); err != nil || n != int64(0) {
		return fmt.Errorf("reply stream left after close: %v, %v", n, err)
	}
	return nil
}
