package redisinfer

// The client's routing without Redis: preparing requests, matching reply entries to pending requests,
// timeouts and cancellation. The same paths against a real worker: cmd/conformance, run by
// tests/test_conformance_go.py.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
)

func offlineClient() *Client {
	cfg := Config{Model: "m"}
	cfg.defaults()
	return &Client{cfg: cfg, pending: map[string]*Pending{}}
}

func replyFields(t *testing.T, id string, body msgpack.Map) map[string][]byte {
	t.Helper()
	b, err := msgpack.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"v": []byte("1"), "id": []byte(id), "body": b}
}

func TestPrepareDefaultsAndDeadline(t *testing.T) {
	c := offlineClient()
	x := MustTensor("x", []int64{1}, []uint8{1})
	p, err := c.prepare(context.Background(), Request{Inputs: []Tensor{x}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.id) != 24 || p.wait != c.cfg.Timeout || p.v != "1" {
		t.Fatalf("defaults: %+v", p)
	}
	body, _ := msgpack.Unmarshal(p.body)
	if model, _ := body.(msgpack.Map).Get("model"); model != "m" {
		t.Fatalf("model %v, want the client's", model)
	}
	p, _ = c.prepare(context.Background(), Request{Inputs: []Tensor{x}, Timeout: 2 * time.Second})
	if p.wait != 3*time.Second {
		t.Fatalf("wait %v, want timeout + 1 s", p.wait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, _ = c.prepare(ctx, Request{Inputs: []Tensor{x}})
	body, _ = msgpack.Unmarshal(p.body)
	ms, _ := body.(msgpack.Map).Get("timeout_ms")
	if n, ok := ms.(int64); !ok || n <= 4000 || n > 5000 {
		t.Fatalf("ctx deadline sent as timeout_ms %v, want about 5000", ms)
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	expired, cancel2 := context.WithDeadline(done, time.Now().Add(-time.Second))
	defer cancel2()
	if _, err := c.prepare(expired, Request{Inputs: []Tensor{x}}); !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled) {
		t.Fatalf("past deadline: %v", err)
	}
}

func TestRepliesAreMatchedByIDAndDuplicatesDropped(t *testing.T) {
	c := offlineClient()
	p, err := c.register("r1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := c.register("r2", time.Minute)
	ok := msgpack.Map{{Key: "status", Value: "OK"}, {Key: "worker", Value: "w1"}}
	c.onReply(map[string][]byte{"wake": []byte("1")}) // the client's own entry
	noV := replyFields(t, "r1", ok)
	delete(noV, "v")
	c.onReply(noV)                                                                     // no v: not a reply
	c.onReply(map[string][]byte{"v": []byte("2"), "id": []byte("r1"), "body": {0x80}}) // another version
	c.onReply(replyFields(t, "unknown", ok))
	select {
	case <-p.Done():
		t.Fatal("settled by an entry that is not its reply")
	default:
	}
	c.onReply(replyFields(t, "r1", ok))
	c.onReply(replyFields(t, "r1", msgpack.Map{{Key: "status", Value: "EXPIRED"}, {Key: "worker", Value: "w2"}}))
	reply, err := p.Result()
	if err != nil || reply.Worker != "w1" {
		t.Fatalf("first reply kept? %+v, %v", reply, err)
	}
	select {
	case <-other.Done():
		t.Fatal("r2 settled by r1's reply")
	default:
	}
	c.onReply(map[string][]byte{"v": []byte("1"), "id": []byte("r2"), "body": {0xc1}})
	if _, err := other.Result(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("undecodable reply: %v", err)
	}
}

func TestErrorReplyBecomesItsStatusError(t *testing.T) {
	c := offlineClient()
	p, _ := c.register("r1", time.Minute)
	c.onReply(replyFields(t, "r1", msgpack.Map{{Key: "status", Value: "INVALID_ARGUMENT"}, {Key: "error", Value: "no"}}))
	_, err := p.Result()
	var se *StatusError
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &se) || se.Reply == nil || se.Message != "no" {
		t.Fatalf("%v", err)
	}
}

func TestClientTimeoutAndCancellation(t *testing.T) {
	c := offlineClient()
	p, _ := c.register("slow", 20*time.Millisecond)
	if _, err := p.Wait(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("no reply: %v", err)
	}
	c.onReply(replyFields(t, "slow", msgpack.Map{{Key: "status", Value: "OK"}})) // too late: dropped
	q, _ := c.register("cancelled", time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	if len(c.pending) != 0 {
		t.Fatalf("still pending: %v", c.pending)
	}
	if _, err := c.register("slow", time.Minute); err != nil {
		t.Fatalf("an id can be used again once settled: %v", err)
	}
	if _, err := c.register("slow", time.Minute); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("an id already waiting: %v", err)
	}
}

func TestStreamEntries(t *testing.T) {
	res := []interface{}{[]interface{}{[]byte("infer:reply:a"), []interface{}{
		[]interface{}{[]byte("1-0"), []interface{}{[]byte("v"), []byte("1"), []byte("id"), []byte("x")}},
		"garbage",
		[]interface{}{[]byte("2-0"), []interface{}{[]byte("wake"), []byte("1")}},
	}}}
	entries := streamEntries(res)
	if len(entries) != 2 || entries[0].id != "1-0" || string(entries[0].fields["id"]) != "x" || entries[1].id != "2-0" {
		t.Fatalf("%+v", entries)
	}
	if streamEntries(nil) != nil {
		t.Fatal("a nil XREAD reply (BLOCK timed out) has no entries")
	}
}

func TestSubmitScriptIsThePythonClients(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "producer", "backpressure.py"))
	if err != nil {
		t.Fatal(err)
	}
	const start = `ADD_SCRIPT: Final = """`
	text := string(src)
	i := strings.Index(text, start)
	if i < 0 {
		t.Fatal("ADD_SCRIPT not found in producer/backpressure.py")
	}
	text = text[i+len(start):]
	if python := text[:strings.Index(text, `"""`)]; python != SubmitScript {
		t.Fatalf("the scripts differ:\n%s\n---\n%s", python, SubmitScript)
	}
}

func TestAddCommandUsesTheScriptOnlyUnderALimit(t *testing.T) {
	c := offlineClient()
	c.replyTo = "infer:reply:r"
	prep := prepared{id: "i", v: "1", body: []byte{0x80}}
	plain := c.addCommand(prep, 0)
	if plain[0] != "XADD" || plain[1] != "infer:requests" || plain[2] != "*" || len(plain) != 11 {
		t.Fatalf("without a limit: %q", plain)
	}
	script := c.addCommand(prep, 7)
	if script[0] != "EVALSHA" || script[1] != submitScriptSHA || script[2] != 1 || script[4] != int64(7) ||
		!reflect.DeepEqual(script[5:], plain[3:]) {
		t.Fatalf("with a limit: %q", script)
	}
	if submitScriptSHA != "3ac24c9dd4f01ba10e7df327cd649dee9757e74d" { // producer.backpressure.ADD_SCRIPT_SHA
		t.Fatalf("sha %s", submitScriptSHA)
	}
}

func TestSubmitAfterCloseIsErrClosed(t *testing.T) {
	c := offlineClient()
	c.closed = true
	x := MustTensor("x", []int64{1}, []uint8{1})
	if _, err := c.Submit(context.Background(), Request{Inputs: []Tensor{x}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit: %v", err)
	}
	if _, err := c.SubmitEncoded(context.Background(), "i", "1", []byte{0x80}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("SubmitEncoded: %v", err)
	}
}
