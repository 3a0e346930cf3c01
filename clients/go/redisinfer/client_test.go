package redisinfer

// The client's routing without Redis: preparing requests, matching reply entries to pending requests,
// timeouts and cancellation. The same paths against a real worker: cmd/conformance, run by
// tests/test_conformance_go.py.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
	"github.com/redis-infer/redis-infer/clients/go/resp"
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

// protocolScript is the backlog script of docs/protocol.md §2.1: the text between its only lua fence and
// the fence that closes it (tests/test_backlog_script.py checks the Python client's against the same block).
func protocolScript(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	const fence = "```lua\n"
	text := string(src)
	if strings.Count(text, fence) != 1 {
		t.Fatal("docs/protocol.md must hold exactly one lua block: the backlog script")
	}
	text = text[strings.Index(text, fence)+len(fence):]
	return text[:strings.Index(text, "```")]
}

func TestSubmitScriptIsTheProtocols(t *testing.T) {
	if doc := protocolScript(t); doc != SubmitScript {
		t.Fatalf("the scripts differ:\n%q\n---\n%q", doc, SubmitScript)
	}
	if !strings.Contains(string(mustRead(t, "..", "..", "..", "docs", "protocol.md")), "`"+submitScriptSHA+"`") {
		t.Fatalf("docs/protocol.md does not name the script's SHA1 %s", submitScriptSHA)
	}
}

func mustRead(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func preparedN(n int) ([]prepared, []int) {
	preps := make([]prepared, n)
	idx := make([]int, n)
	for i := range preps {
		preps[i] = prepared{id: fmt.Sprint("r", i), v: "1", body: []byte{0x80}}
		idx[i] = i
	}
	return preps, idx
}

func TestAddCallsUseTheScriptOnlyUnderALimitOneCallPerChunk(t *testing.T) {
	c := offlineClient()
	c.replyTo = "infer:reply:r"
	preps, idx := preparedN(2*ScriptChunk + 1)
	plain := c.addCalls(preps, idx, 0)
	if len(plain) != len(preps) || plain[0].cmd[0] != "XADD" || plain[0].cmd[1] != "infer:requests" ||
		plain[0].cmd[2] != "*" || len(plain[0].cmd) != 11 || !reflect.DeepEqual(plain[5].members, []int{5}) {
		t.Fatalf("without a limit: %q", plain[0].cmd)
	}
	calls := c.addCalls(preps, idx[1:], 7) // idx[0] settled before sending (invalid input...)
	if len(calls) != 2 || len(calls[0].members) != ScriptChunk || calls[0].members[0] != 1 ||
		!reflect.DeepEqual(calls[1].members, idx[ScriptChunk+1:]) {
		t.Fatalf("chunks: %d calls, members %v...", len(calls), calls[0].members[:2])
	}
	head := []interface{}{"EVALSHA", submitScriptSHA, 1, "infer:requests", int64(7), ScriptChunk}
	if !reflect.DeepEqual(calls[0].cmd[:6], head) || len(calls[0].cmd) != 6+9*ScriptChunk {
		t.Fatalf("script call: %q", calls[0].cmd[:6])
	}
	second := append([]interface{}{8}, plain[2].cmd[3:]...) // k = 8, then request 2's fields
	if !reflect.DeepEqual(calls[0].cmd[6+9:6+18], second) || calls[1].cmd[5] != ScriptChunk {
		t.Fatalf("entry layout: %q", calls[0].cmd[6+9:6+18])
	}
}

func TestTheScriptsRefusedTailIsBusyAndAnErrorFailsTheWholeCall(t *testing.T) {
	c := offlineClient()
	preps, idx := preparedN(5)
	out := make([]*Pending, len(preps))
	for i, prep := range preps {
		out[i], _ = c.register(prep.id, time.Minute)
	}
	calls := c.addCalls(preps, idx, 9)
	ids := []interface{}{[]byte("1-1"), []byte("1-2")}
	c.settleCall(out, calls[0], []interface{}{int64(9), ids}, 9)
	for i, p := range out {
		busy := errors.Is(p.submitErr, ErrBusy)
		if busy != (i >= 2) {
			t.Fatalf("request %d: %v (the first 2 were added, the other 3 refused)", i, p.submitErr)
		}
	}
	if len(c.pending) != 2 || !strings.Contains(out[4].submitErr.Error(), "holds 9 entries, the limit is 9") {
		t.Fatalf("pending %d, %v", len(c.pending), out[4].submitErr)
	}
	for _, res := range []interface{}{resp.Error("NOPERM no permissions"), []interface{}{int64(1)}, int64(3)} {
		p, _ := c.register("x", time.Minute)
		c.settleCall([]*Pending{p}, addCall{cmd: calls[0].cmd, members: []int{0}}, res, 9)
		if p.submitErr == nil || errors.Is(p.submitErr, ErrBusy) {
			t.Fatalf("answer %v: %v", res, p.submitErr)
		}
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
