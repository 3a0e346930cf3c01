package redisinfer

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// SubmitScript is the protocol's backlog script (docs/protocol.md §2.1), byte for byte: every client sends
// this text, so all share one entry of Redis's script cache. KEYS[1] the request stream; ARGV[1] the
// max_backlog the client read; ARGV[2] the entry count n; then for each entry k and its k field/value
// arguments. It adds the entries in order while XLEN stays under the limit and returns {XLEN after, {ids
// added}}: the entries past the last id were refused (BUSY). It touches only the request stream (the limit
// comes in ARGV, not as a declared key), so the shipped producer ACL (deploy/acl) allows it, and under
// Redis Cluster it runs on the stream's slot.
const SubmitScript = `
local max = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
local ids = {}
local i = 3
for e = 1, n do
  if max > 0 and len >= max then break end
  local k = tonumber(ARGV[i])
  ids[e] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + k))
  len = len + 1
  i = i + k + 1
end
return {len, ids}
`

// ScriptChunk is the most requests one backlog script call adds (the Python client's chunk): a SubmitMany
// under a limit pipelines one call per chunk.
const ScriptChunk = 128

// LimitRefresh is how long the client trusts the max_backlog it read (the Python client's REFRESH_S).
const LimitRefresh = 5 * time.Second

// submitScriptSHA is the script's SHA1, as EVALSHA wants it.
var submitScriptSHA = func() string {
	sum := sha1.Sum([]byte(SubmitScript))
	return hex.EncodeToString(sum[:])
}()

// limit caches the workers' max_backlog from <stream>:limits (docs/protocol.md §2.1), read apart with HGET.
// While it is 0 the client adds requests with a plain XADD (as the Python client does: the script costs
// Redis a copy of the body); once it is set, through SubmitScript, which checks the backlog and adds in one
// step. A limit published or changed meanwhile is seen within LimitRefresh, as by the Python client.
type limit struct {
	mu        sync.Mutex
	key       string
	value     int64
	fetchedAt time.Time
}

// get returns the cached limit, reading it again when it is older than LimitRefresh. A value that is not
// an integer reads as 0 (unbounded), as the workers and the other clients read it.
func (l *limit) get(ctx context.Context, conn *resp.Conn) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.fetchedAt.IsZero() && time.Since(l.fetchedAt) < LimitRefresh {
		return l.value, nil
	}
	raw, err := conn.Do(ctx, "HGET", l.key, "max_backlog")
	if err != nil {
		return 0, err
	}
	l.value = 0
	if b, ok := raw.([]byte); ok {
		if n, err := strconv.ParseInt(string(b), 10, 64); err == nil && n > 0 {
			l.value = n
		}
	}
	l.fetchedAt = time.Now()
	return l.value, nil
}

// addCall is one command of a send round and the requests it adds (indexes into the round's requests):
// one XADD per request with no limit, one backlog script call per chunk of up to ScriptChunk under one.
type addCall struct {
	cmd     []interface{}
	members []int
}

// addCalls builds the commands that add preps[i] for each i of idx, in order.
func (c *Client) addCalls(preps []prepared, idx []int, maxBacklog int64) []addCall {
	var calls []addCall
	if maxBacklog <= 0 {
		for _, i := range idx {
			cmd := append([]interface{}{"XADD", c.cfg.Stream, "*"}, c.entryFields(preps[i])...)
			calls = append(calls, addCall{cmd: cmd, members: []int{i}})
		}
		return calls
	}
	for start := 0; start < len(idx); start += ScriptChunk {
		members := idx[start:minInt(start+ScriptChunk, len(idx))]
		cmd := []interface{}{"EVALSHA", submitScriptSHA, 1, c.cfg.Stream, maxBacklog, len(members)}
		for _, i := range members {
			fields := c.entryFields(preps[i])
			cmd = append(append(cmd, len(fields)), fields...)
		}
		calls = append(calls, addCall{cmd: cmd, members: members})
	}
	return calls
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// entryFields are the request entry's fields and values (docs/protocol.md §3).
func (c *Client) entryFields(prep prepared) []interface{} {
	return []interface{}{"v", prep.v, "id", prep.id, "reply_to", c.replyTo, "body", prep.body}
}

// evalMissing sends again with EVAL (the script's text) the script calls answered NOSCRIPT (not in the
// script cache yet, or flushed), in one pipeline, and puts their answers in results.
func (c *Client) evalMissing(ctx context.Context, calls []addCall, results []interface{}) error {
	var again [][]interface{}
	var where []int
	for k, res := range results {
		if e, ok := res.(resp.Error); ok && strings.HasPrefix(string(e), "NOSCRIPT") {
			cmd := calls[k].cmd // EVALSHA <sha> <numkeys> ...
			again = append(again, append([]interface{}{"EVAL", SubmitScript}, cmd[2:]...))
			where = append(where, k)
		}
	}
	if len(again) == 0 {
		return nil
	}
	replies, err := c.cmd.Pipeline(ctx, again)
	if err != nil {
		return err
	}
	for j, k := range where {
		results[k] = replies[j]
	}
	return nil
}

// added reads a call's answer: how many of its members were added (the others were refused: BUSY) and the
// backlog it reported, or the error that leaves all of them unsent (or, for a Redis failure, in doubt).
func added(call addCall, res interface{}) (n int, backlog int64, err error) {
	if e, ok := res.(resp.Error); ok {
		return 0, 0, e
	}
	if call.cmd[0] == "XADD" {
		return 1, 0, nil
	}
	pair, _ := res.([]interface{})
	if len(pair) == 2 {
		backlog, okLen := pair[0].(int64)
		ids, okIDs := pair[1].([]interface{})
		if okLen && okIDs && len(ids) <= len(call.members) {
			return len(ids), backlog, nil
		}
	}
	return 0, 0, fmt.Errorf("unexpected answer of the backlog script: %v", res)
}

// settleCall settles the requests of one call that were not added: refused by the script (BUSY), or all of
// them when the call failed.
func (c *Client) settleCall(out []*Pending, call addCall, res interface{}, maxBacklog int64) {
	n, backlog, err := added(call, res)
	for j, i := range call.members {
		p := out[i]
		var perr error
		switch {
		case err != nil:
			perr = fmt.Errorf("adding request %s: %w", p.ID, err)
		case j >= n:
			perr = &StatusError{Status: StatusBusy, ID: p.ID, Message: fmt.Sprintf(
				"the backlog of %s holds %d entries, the limit is %d; nothing was added", c.cfg.Stream, backlog, maxBacklog)}
		default:
			continue
		}
		c.settle(p.ID, nil, perr)
		p.submitErr = perr
	}
}
