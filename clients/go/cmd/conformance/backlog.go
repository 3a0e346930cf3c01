package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// namedOnly are scenarios that run only when CONFORMANCE_ONLY names them: they need a set-up the default
// run does not make.
var namedOnly = []scenario{
	{"busy_refuses_the_tail", scenarioBusyTail},
}

// scenarioBusyTail: with no worker running, the request stream holding XLEN entries and a max_backlog of
// XLEN + room published (room > ScriptChunk, so the refusal falls in the second script call), room + 3
// requests submitted at once: the first room are added, the last 3 are BUSY and nothing of them is written;
// then one more is BUSY. Everything it reads, it reads as the client's user (the shipped producer ACL
// allows HGET of the limits and XLEN of the stream).
func scenarioBusyTail(ctx context.Context, e *env) error {
	opts, err := resp.ParseURL(e.url)
	if err != nil {
		return err
	}
	raw, err := resp.Dial(ctx, opts)
	if err != nil {
		return err
	}
	defer raw.Close()
	before, room, err := backlogRoom(ctx, raw, e.stream)
	if err != nil {
		return err
	}
	if room <= redisinfer.ScriptChunk {
		return fmt.Errorf("set-up: room %d under the limit, want more than %d", room, redisinfer.ScriptChunk)
	}
	reqs := make([]redisinfer.Request, room+3)
	for i := range reqs {
		reqs[i] = req(x(1, 3, float32(i)))
		reqs[i].Wait = 200 * time.Millisecond // nobody serves them
	}
	pending, err := e.client.SubmitMany(ctx, reqs)
	if err != nil {
		return err
	}
	for i, p := range pending {
		_, err := p.Wait(ctx)
		want := redisinfer.ErrTimeout
		if i >= int(room) {
			want = redisinfer.ErrBusy
		}
		if _, err := expect(err, want); err != nil {
			return fmt.Errorf("request %d of %d (room %d): %w", i, len(reqs), room, err)
		}
	}
	if _, err := expect(doErr(ctx, e, req(x(1, 3, 0))), redisinfer.ErrBusy); err != nil {
		return fmt.Errorf("one more at the limit: %w", err)
	}
	if n, err := raw.Do(ctx, "XLEN", e.stream); err != nil || n != before+room {
		return fmt.Errorf("XLEN %v (%v), want %d: the refused requests were added", n, err, before+room)
	}
	return nil
}

func backlogRoom(ctx context.Context, raw *resp.Conn, stream string) (length, room int64, err error) {
	limit, err := raw.Do(ctx, "HGET", stream+":limits", "max_backlog")
	if err != nil {
		return 0, 0, err
	}
	b, _ := limit.([]byte)
	max, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, 0, errors.New("set-up: no max_backlog published")
	}
	n, err := raw.Do(ctx, "XLEN", stream)
	if err != nil {
		return 0, 0, err
	}
	length, _ = n.(int64)
	return length, max - length, nil
}
