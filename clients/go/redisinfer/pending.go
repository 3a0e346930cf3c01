package redisinfer

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Pending is a submitted request waiting for its reply.
type Pending struct {
	ID string

	client    *Client
	done      chan struct{}
	timer     *time.Timer
	once      sync.Once
	reply     *Reply
	err       error
	submitErr error // set when the request was never added (invalid input, BUSY...)
}

func donePending(id string, err error) *Pending {
	p := &Pending{ID: id, done: make(chan struct{}), submitErr: err}
	p.finish(nil, err)
	return p
}

func (p *Pending) finish(reply *Reply, err error) {
	p.once.Do(func() {
		if p.timer != nil {
			p.timer.Stop()
		}
		p.reply, p.err = reply, err
		close(p.done)
	})
}

// Done is closed when the request is settled: answered, timed out, refused or the client closed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result waits for the request to settle and returns the reply if its status is OK; otherwise a
// *StatusError (holding the reply, if there was one) or the error that ended the wait.
func (p *Pending) Result() (*Reply, error) {
	<-p.done
	if p.err != nil {
		return nil, p.err
	}
	if p.reply.Status != StatusOK {
		return nil, &StatusError{Status: p.reply.Status, ID: p.ID, Message: p.reply.Error, Reply: p.reply}
	}
	return p.reply, nil
}

// Wait is Result bounded by ctx: when ctx ends first the client stops waiting for this request (a reply
// that comes later is dropped) and ctx.Err() is returned.
func (p *Pending) Wait(ctx context.Context) (*Reply, error) {
	select {
	case <-p.done:
		return p.Result()
	case <-ctx.Done():
	}
	if p.client != nil {
		p.client.settle(p.ID, nil, ctx.Err())
	}
	return p.Result()
}

// readLoop reads the reply stream until stopped; after a failure it waits a little and reads on from the
// last entry it saw (the connection dials again), so replies written meanwhile are not missed.
func (c *Client) readLoop(ctx context.Context) {
	defer close(c.readerDone)
	last := "0-0"
	backoff := 10 * time.Millisecond
	block := fmt.Sprint(c.cfg.ReadBlock.Milliseconds())
	for ctx.Err() == nil {
		callCtx, cancel := context.WithTimeout(ctx, c.cfg.ReadBlock+10*time.Second)
		res, err := c.reader.Do(callCtx, "XREAD", "COUNT", "512", "BLOCK", block, "STREAMS", c.replyTo, last)
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 10 * time.Millisecond
		for _, entry := range streamEntries(res) {
			last = entry.id
			c.onReply(entry.fields)
		}
	}
}

type streamEntry struct {
	id     string
	fields map[string][]byte
}

// streamEntries flattens an XREAD reply ([[key, [[id, [f, v, ...]], ...]]]), skipping what is not shaped so.
func streamEntries(res interface{}) []streamEntry {
	var out []streamEntry
	streams, _ := res.([]interface{})
	for _, s := range streams {
		pair, _ := s.([]interface{})
		if len(pair) != 2 {
			continue
		}
		entries, _ := pair[1].([]interface{})
		for _, e := range entries {
			item, _ := e.([]interface{})
			if len(item) != 2 {
				continue
			}
			id, _ := item[0].([]byte)
			flat, _ := item[1].([]interface{})
			fields := make(map[string][]byte, len(flat)/2)
			for i := 0; i+1 < len(flat); i += 2 {
				k, _ := flat[i].([]byte)
				v, _ := flat[i+1].([]byte)
				fields[string(k)] = v
			}
			out = append(out, streamEntry{id: string(id), fields: fields})
		}
	}
	return out
}

// onReply settles the request a reply entry answers. Entries without v (the client's own), with another
// version, or for an id nobody waits for (a duplicate, or a reply after its timeout) are dropped.
func (c *Client) onReply(fields map[string][]byte) {
	v, hasV := fields["v"]
	rawID, hasID := fields["id"]
	body, hasBody := fields["body"]
	if !hasV || string(v) != ProtocolVersion || !hasID || !hasBody {
		return
	}
	id := string(rawID)
	c.mu.Lock()
	_, waiting := c.pending[id]
	c.mu.Unlock()
	if !waiting {
		return
	}
	reply, err := DecodeReplyBody(id, body)
	if err != nil {
		c.settle(id, nil, &StatusError{Status: StatusMalformed, ID: id, Message: "undecodable reply: " + err.Error()})
		return
	}
	c.settle(id, reply, nil)
}
