package main

// §9, §9.1: requests whose id or reply_to cannot be read. An unreadable id with an allowed reply_to is
// answered under the request's entry id (the id XADD returned) and dead-lettered; a reply_to the workers
// cannot use leaves nowhere to answer: dead-lettered only.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
	"github.com/redis-infer/redis-infer/clients/go/resp"
)

const missing = "\x00missing" // an id or reply_to left out of the entry

type rawCase struct {
	id, replyTo string
	status      redisinfer.Status // the reply's status, "" when none is due
	problem     string            // the start of its error
}

// xaddRaw adds a request for the affine model with the given envelope; returns its entry id.
func xaddRaw(ctx context.Context, e *env, raw *resp.Conn, id, replyTo string) (string, error) {
	body, err := msgpack.Marshal(affineBody())
	if err != nil {
		return "", err
	}
	args := []interface{}{"XADD", e.stream, "*", "v", "1"}
	if id != missing {
		args = append(args, "id", id)
	}
	if replyTo != missing {
		args = append(args, "reply_to", replyTo)
	}
	entryID, err := raw.Do(ctx, append(args, "body", body)...)
	if err != nil {
		return "", err
	}
	b, _ := entryID.([]byte)
	return string(b), nil
}

// An unreadable id (empty, 129 bytes, not UTF-8, missing) with a usable reply_to: answered under the entry id,
// with the status of §6/§7 and an error naming the id problem, and dead-lettered as well.
func scenarioUnreadableID(ctx context.Context, e *env) error {
	raw, err := resp.Dial(ctx, resp.Options{Addr: e.addr})
	if err != nil {
		return err
	}
	defer raw.Close()
	replyTo := e.client.ReplyTo() + ":unreadable-ids" // nobody reads it but this scenario
	defer func() { _, _ = raw.Do(context.Background(), "DEL", replyTo) }()
	cases := map[string]rawCase{
		"empty id":     {"", replyTo, redisinfer.StatusMalformed, "field 'id' is empty"},
		"129-byte id":  {strings.Repeat("i", 129), replyTo, redisinfer.StatusTooLarge, "field 'id' is longer than 128 bytes"},
		"id not UTF-8": {"\xff\xfe", replyTo, redisinfer.StatusMalformed, "field 'id' is not UTF-8"},
		"id missing":   {missing, replyTo, redisinfer.StatusMalformed, "entry has no 'id' field"},
	}
	byEntry := map[string]rawCase{}
	for what, c := range cases {
		entryID, err := xaddRaw(ctx, e, raw, c.id, c.replyTo)
		if err != nil {
			return err
		}
		byEntry[entryID] = c
		if err := waitDeadLetter(ctx, raw, e.stream, entryID, strings.TrimPrefix(c.id, missing)); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	replies, err := waitReplies(ctx, raw, replyTo, len(byEntry))
	if err != nil {
		return err
	}
	for entryID, c := range byEntry {
		r, ok := replies[entryID]
		if !ok {
			return fmt.Errorf("id %q: no reply under its entry id %s (got %d replies)", c.id, entryID, len(replies))
		}
		want := fmt.Sprintf("%s (answered under the entry id %s)", c.problem, entryID)
		if r.Status != c.status || r.Error != want {
			return fmt.Errorf("id %q: %s %q, want %s %q", c.id, r.Status, r.Error, c.status, want)
		}
	}
	if len(replies) != len(byEntry) {
		return fmt.Errorf("%d replies for %d requests", len(replies), len(byEntry))
	}
	_, err = e.client.Do(ctx, req(x(1, 3, 0))) // later requests are still served
	return err
}

// A reply_to the workers cannot use (the bare prefix, missing, 257 bytes), with a readable id or not:
// dead-lettered with the documented record, never answered, and the worker serves the next request.
func scenarioUnanswerable(ctx context.Context, e *env) error {
	raw, err := resp.Dial(ctx, resp.Options{Addr: e.addr})
	if err != nil {
		return err
	}
	defer raw.Close()
	long := "infer:reply:" + strings.Repeat("r", 245) // 257 bytes
	cases := map[string]rawCase{
		"bare reply_to":               {id: "bare-1", replyTo: "infer:reply:"},
		"reply_to missing":            {id: "no-reply-to", replyTo: missing},
		"257-byte reply_to":           {id: "long-reply-to", replyTo: long},
		"257-byte reply_to, empty id": {id: "", replyTo: long},
	}
	entries := map[string]bool{}
	for what, c := range cases {
		entryID, err := xaddRaw(ctx, e, raw, c.id, c.replyTo)
		if err != nil {
			return err
		}
		entries[entryID] = true
		if err := waitDeadLetter(ctx, raw, e.stream, entryID, c.id); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if _, err := e.client.Do(ctx, req(x(1, 3, 0))); err != nil { // later requests are still served
		return err
	}
	for _, key := range []string{"infer:reply:", long} {
		if n, err := raw.Do(ctx, "EXISTS", key); err != nil || n != int64(0) {
			return fmt.Errorf("a reply written to %.20q...: %v, %v", key, n, err)
		}
	}
	return noReplyTo(ctx, raw, e.client.ReplyTo(), entries)
}

// waitReplies reads replyTo until it holds count replies; returns them by id.
func waitReplies(ctx context.Context, raw *resp.Conn, replyTo string, count int) (map[string]*redisinfer.Reply, error) {
	for {
		res, err := raw.Do(ctx, "XRANGE", replyTo, "-", "+")
		if err != nil {
			return nil, err
		}
		items, _ := res.([]interface{})
		out := map[string]*redisinfer.Reply{}
		for _, item := range items {
			f := fieldsOf(item)
			r, err := redisinfer.DecodeReplyBody(f["id"], []byte(f["body"]))
			if err != nil {
				return nil, fmt.Errorf("reply %q: %w", f["id"], err)
			}
			out[f["id"]] = r
		}
		if len(out) >= count {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d replies", len(out), count)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitDeadLetter waits until the dead-letter stream holds the entry, and checks the record's layout.
func waitDeadLetter(ctx context.Context, raw *resp.Conn, stream, entryID, id string) error {
	for {
		res, err := raw.Do(ctx, "XRANGE", stream+":dead", "-", "+")
		if err != nil {
			return err
		}
		items, _ := res.([]interface{})
		for _, item := range items {
			f := fieldsOf(item)
			if f["original_id"] != entryID {
				continue
			}
			for _, key := range []string{"reason", "worker", "stream", "dead_lettered_ms"} {
				if f[key] == "" {
					return fmt.Errorf("dead letter without %q: %v", key, f)
				}
			}
			if f["stream"] != stream || f["f:id"] != id {
				return fmt.Errorf("dead letter stream %q, f:id %q: %v", f["stream"], f["f:id"], f)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("never dead-lettered")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func fieldsOf(item interface{}) map[string]string {
	out := map[string]string{}
	pair, _ := item.([]interface{})
	if len(pair) != 2 {
		return out
	}
	flat, _ := pair[1].([]interface{})
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].([]byte)
		v, _ := flat[i+1].([]byte)
		out[string(k)] = string(v)
	}
	return out
}

// noReplyTo checks that no reply in the client's stream answers an unanswerable request, neither under its id
// nor under its entry id.
func noReplyTo(ctx context.Context, raw *resp.Conn, replyTo string, entries map[string]bool) error {
	res, err := raw.Do(ctx, "XRANGE", replyTo, "-", "+")
	if err != nil {
		return err
	}
	items, _ := res.([]interface{})
	for _, item := range items {
		id := fieldsOf(item)["id"]
		if id == "" || id == "bare-1" || id == "no-reply-to" || id == "long-reply-to" || entries[id] {
			return fmt.Errorf("a reply to an unanswerable request %q", id)
		}
	}
	return nil
}
