// Package redisinfer is a client of the redis-infer wire protocol v1 (docs/protocol.md): it adds
// requests to a request stream and matches the workers' replies from a reply stream of its own.
//
//	c, err := redisinfer.Dial(ctx, "redis://127.0.0.1:6379/0", redisinfer.Config{Model: "affine"})
//	x := redisinfer.MustTensor("x", []int64{1, 3}, []float32{1, 2, 3})
//	out, err := c.Infer(ctx, redisinfer.Request{Inputs: []redisinfer.Tensor{x}})
//	y, err := out["y"].Float32s() // [3 5 7]
//	c.Close()                     // deletes the reply stream
package redisinfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// Config holds the client's settings; the zero value of each field means its default.
type Config struct {
	Model       string        // model of requests that name none
	Stream      string        // request stream; default "infer:requests"
	ReplyPrefix string        // reply stream prefix the workers allow; default "infer:reply:"
	Timeout     time.Duration // wait for a reply when neither the request nor ctx bounds it; default 30 s
	ReadBlock   time.Duration // XREAD BLOCK of the reply reader; default 1 s
	DialTimeout time.Duration // default 10 s
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "infer:requests"
	}
	if c.ReplyPrefix == "" {
		c.ReplyPrefix = "infer:reply:"
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.ReadBlock <= 0 {
		c.ReadBlock = time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
}

// Client submits requests and routes replies. Safe for use by many goroutines.
type Client struct {
	cfg     Config
	cmd     *resp.Conn // commands (the submit script, DEL)
	reader  *resp.Conn // XREAD BLOCK on the reply stream only
	replyTo string
	limit   limit

	mu      sync.Mutex
	pending map[string]*Pending // by request id; a reply for an id not here is dropped
	closed  bool

	stopRead   context.CancelFunc
	readerDone chan struct{}
}

// Dial connects to Redis (redis://[user:password@]host:port/db or unix:///path) and starts reading the
// client's reply stream, infer:reply:<32 random hex digits> by default.
func Dial(ctx context.Context, url string, cfg Config) (*Client, error) {
	cfg.defaults()
	opts, err := resp.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opts.DialTimeout = cfg.DialTimeout
	cmd, err := resp.Dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	reader, err := resp.Dial(ctx, opts)
	if err != nil {
		_ = cmd.Close()
		return nil, err
	}
	readCtx, stop := context.WithCancel(context.Background())
	c := &Client{
		cfg: cfg, cmd: cmd, reader: reader, replyTo: cfg.ReplyPrefix + randomHex(16),
		limit:   limit{key: cfg.Stream + ":limits"},
		pending: map[string]*Pending{}, stopRead: stop, readerDone: make(chan struct{}),
	}
	go c.readLoop(readCtx)
	return c, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// ReplyTo is the key of this client's reply stream.
func (c *Client) ReplyTo() string { return c.replyTo }

// Stream is the request stream this client adds to.
func (c *Client) Stream() string { return c.cfg.Stream }

// Infer submits one request and waits for its reply: the outputs by name, or the error (a *StatusError
// for a reply that is not OK, BUSY and TIMEOUT; ctx.Err() when ctx ends first).
func (c *Client) Infer(ctx context.Context, req Request) (map[string]Tensor, error) {
	reply, err := c.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Tensor, len(reply.Outputs))
	for _, t := range reply.Outputs {
		out[t.Name] = t
	}
	return out, nil
}

// Do submits one request and waits for its whole reply (outputs, timing, worker, batch size).
func (c *Client) Do(ctx context.Context, req Request) (*Reply, error) {
	p, err := c.Submit(ctx, req)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Submit adds one request and returns at once with its Pending. An error means nothing was added (or,
// for a Redis failure, that it is not known whether it was): ErrInvalidInput, ErrBusy, ErrClosed, or the
// connection's error. When the request sets no Timeout and ctx has a deadline, the time left is sent as
// the request's timeout_ms, so a worker does not compute what nobody waits for.
func (c *Client) Submit(ctx context.Context, req Request) (*Pending, error) {
	ps, err := c.SubmitMany(ctx, []Request{req})
	if err != nil {
		return nil, err
	}
	if ps[0].submitErr != nil {
		return nil, ps[0].submitErr
	}
	return ps[0], nil
}

// prepared is a request ready to send: its id, encoded body and client-side wait.
type prepared struct {
	id   string
	v    string
	body []byte
	wait time.Duration
}

func (c *Client) prepare(ctx context.Context, req Request) (prepared, error) {
	if req.Model == "" {
		req.Model = c.cfg.Model
	}
	if req.ID == "" {
		req.ID = randomHex(12)
	}
	if deadline, ok := ctx.Deadline(); ok && req.Timeout == 0 {
		req.Timeout = time.Until(deadline)
		if req.Timeout <= 0 {
			return prepared{}, ctx.Err()
		}
	}
	if err := validate(req); err != nil {
		return prepared{}, err
	}
	body, err := EncodeBody(req)
	if err != nil {
		return prepared{}, err
	}
	wait := req.Wait
	if wait <= 0 && req.Timeout > 0 {
		wait = req.Timeout + time.Second
	} else if wait <= 0 {
		wait = c.cfg.Timeout
	}
	return prepared{id: req.ID, v: ProtocolVersion, body: body, wait: wait}, nil
}

func validate(req Request) error {
	if req.Model == "" {
		return invalidInput("no model: set Request.Model or Config.Model")
	}
	if len(req.ID) > 128 || !utf8.ValidString(req.ID) {
		return invalidInput("request id must be 1 to 128 bytes of UTF-8")
	}
	if len(req.Inputs) == 0 {
		return invalidInput("no inputs")
	}
	if req.Timeout/time.Millisecond > math.MaxInt32 {
		return invalidInput("timeout %v is beyond 2^31-1 ms", req.Timeout)
	}
	seen := map[string]bool{}
	for _, t := range req.Inputs {
		if seen[t.Name] {
			return invalidInput("input %q is given twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// SubmitMany adds all requests in one pipeline (one round trip) and returns one Pending per request, in
// order. A request refused before or by the script (invalid input, BUSY) has a Pending that is already
// done with that error; the error return is for a Redis failure, which leaves every request in doubt.
func (c *Client) SubmitMany(ctx context.Context, reqs []Request) ([]*Pending, error) {
	preps := make([]prepared, len(reqs))
	out := make([]*Pending, len(reqs))
	for i, req := range reqs {
		prep, err := c.prepare(ctx, req)
		if err != nil {
			out[i] = donePending(req.ID, err)
			continue
		}
		preps[i] = prep
	}
	return c.send(ctx, preps, out)
}

// SubmitEncoded adds an already encoded body under id with protocol version v (ProtocolVersion unless
// testing a worker) and waits up to wait for the reply. For tools and conformance tests that must send
// what Submit refuses to build; nothing is validated.
func (c *Client) SubmitEncoded(ctx context.Context, id, v string, body []byte, wait time.Duration) (*Pending, error) {
	if wait <= 0 {
		wait = c.cfg.Timeout
	}
	ps, err := c.send(ctx, []prepared{{id: id, v: v, body: body, wait: wait}}, make([]*Pending, 1))
	if err != nil {
		return nil, err
	}
	if ps[0].submitErr != nil {
		return nil, ps[0].submitErr
	}
	return ps[0], nil
}

// send registers a Pending for each prepared request (out[i] == nil), adds them in one pipeline (one XADD
// each with no limit published, one backlog script call per chunk under one) and settles those that were
// refused (BUSY from the script, or an error reply).
func (c *Client) send(ctx context.Context, preps []prepared, out []*Pending) ([]*Pending, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	maxBacklog, err := c.limitFor(ctx, out)
	if err != nil {
		return nil, err
	}
	var idx []int
	for i, prep := range preps {
		if out[i] != nil {
			continue
		}
		p, err := c.register(prep.id, prep.wait)
		if err != nil {
			out[i] = donePending(prep.id, err)
			continue
		}
		out[i] = p
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return out, nil
	}
	calls := c.addCalls(preps, idx, maxBacklog)
	cmds := make([][]interface{}, len(calls))
	for k, call := range calls {
		cmds[k] = call.cmd
	}
	results, err := c.cmd.Pipeline(ctx, cmds)
	if err == nil {
		err = c.evalMissing(ctx, calls, results)
	}
	if err != nil {
		for _, i := range idx {
			c.settle(out[i].ID, nil, err)
		}
		return nil, err
	}
	for k, call := range calls {
		c.settleCall(out, call, results[k], maxBacklog)
	}
	return out, nil
}

// limitFor is the max_backlog a round is sent under; read only when the round has something to send.
func (c *Client) limitFor(ctx context.Context, out []*Pending) (int64, error) {
	for _, p := range out {
		if p == nil {
			return c.limit.get(ctx, c.cmd)
		}
	}
	return 0, nil
}

func (c *Client) register(id string, wait time.Duration) (*Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, dup := c.pending[id]; dup {
		return nil, invalidInput("request id %q is already waiting for its reply", id)
	}
	p := &Pending{ID: id, client: c, done: make(chan struct{})}
	c.pending[id] = p
	p.timer = time.AfterFunc(wait, func() {
		c.settle(id, nil, &StatusError{Status: StatusTimeout, ID: id,
			Message: fmt.Sprintf("no reply within %v", wait)})
	})
	return p, nil
}

// settle completes the pending request id (once: whoever takes it out of the map completes it).
func (c *Client) settle(id string, reply *Reply, err error) {
	c.mu.Lock()
	p, ok := c.pending[id]
	if ok {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if ok {
		p.finish(reply, err)
	}
}

// Close stops reading, fails the requests still waiting with ErrClosed, deletes the reply stream and
// closes both connections. Calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	waiting := c.pending
	c.pending = map[string]*Pending{}
	c.mu.Unlock()
	c.stopRead()
	_ = c.reader.Close()
	<-c.readerDone
	for _, p := range waiting {
		p.finish(nil, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.cmd.Do(ctx, "DEL", c.replyTo)
	_ = c.cmd.Close()
	if err != nil && !errors.Is(err, resp.ErrClosed) {
		return fmt.Errorf("deleting the reply stream %s: %w", c.replyTo, err)
	}
	return nil
}
