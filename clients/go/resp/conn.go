package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options say where a Conn connects and how it authenticates.
type Options struct {
	Network     string // "tcp" (default) or "unix"
	Addr        string // host:port, or a socket path for "unix"
	Username    string // ACL user (with Password); empty: the default user
	Password    string // AUTH when not empty
	DB          int    // SELECT when not 0
	DialTimeout time.Duration
}

// ParseURL reads redis://[user:password@]host[:port][/db] and unix://[user:password@]/path[?db=n].
// rediss:// (TLS) is not supported by this client.
func ParseURL(raw string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Options{}, fmt.Errorf("resp: bad Redis URL: %w", err)
	}
	opts := Options{Network: "tcp"}
	if u.User != nil {
		opts.Username = u.User.Username()
		opts.Password, _ = u.User.Password()
		if _, set := u.User.Password(); !set { // redis://secret@host: the password alone
			opts.Username, opts.Password = "", u.User.Username()
		}
	}
	db := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "redis":
		opts.Addr = u.Host
		if u.Port() == "" {
			opts.Addr = net.JoinHostPort(u.Hostname(), "6379")
		}
	case "unix":
		opts.Network, opts.Addr, db = "unix", u.Path, u.Query().Get("db")
	default:
		return Options{}, fmt.Errorf("resp: unsupported URL scheme %q (redis:// or unix://)", u.Scheme)
	}
	if db != "" {
		if opts.DB, err = strconv.Atoi(db); err != nil || opts.DB < 0 {
			return Options{}, fmt.Errorf("resp: bad database number %q in the URL", db)
		}
	}
	return opts, nil
}

// Conn is one connection to Redis. Its methods may be called from several goroutines: each call is one
// round trip (a command, or a pipeline written at once), and calls take turns. After an I/O failure, or a
// call cut short by its context, the connection is closed and the next call dials again.
type Conn struct {
	opts Options
	mu   sync.Mutex
	nc   net.Conn
	rd   *bufio.Reader
	wr   *bufio.Writer
	shut bool

	liveMu sync.Mutex // guards live: Close reads it while a call holds mu
	live   net.Conn
}

// ErrClosed is returned by calls on a Conn after Close.
var ErrClosed = errors.New("resp: connection closed")

// Dial connects (and authenticates, and selects the database) now, so that a wrong address or password
// is reported at once.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	c := &Conn{opts: opts}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Conn) connect(ctx context.Context) error {
	network := c.opts.Network
	if network == "" {
		network = "tcp"
	}
	d := net.Dialer{Timeout: c.opts.DialTimeout}
	nc, err := d.DialContext(ctx, network, c.opts.Addr)
	if err != nil {
		return err
	}
	c.nc, c.rd, c.wr = nc, bufio.NewReaderSize(nc, 64<<10), bufio.NewWriterSize(nc, 64<<10)
	c.setLive(nc)
	var setup [][]interface{}
	if c.opts.Password != "" {
		if c.opts.Username != "" {
			setup = append(setup, []interface{}{"AUTH", c.opts.Username, c.opts.Password})
		} else {
			setup = append(setup, []interface{}{"AUTH", c.opts.Password})
		}
	}
	if c.opts.DB != 0 {
		setup = append(setup, []interface{}{"SELECT", c.opts.DB})
	}
	if len(setup) == 0 {
		return nil
	}
	replies, err := c.roundTrip(ctx, setup)
	if err == nil {
		for _, r := range replies {
			if e, ok := r.(Error); ok {
				err = fmt.Errorf("resp: connection set-up refused: %w", e)
			}
		}
	}
	if err != nil {
		c.drop()
	}
	return err
}

// Do sends one command and returns its reply; an error reply is returned as the error (an Error).
func (c *Conn) Do(ctx context.Context, args ...interface{}) (interface{}, error) {
	replies, err := c.Pipeline(ctx, [][]interface{}{args})
	if err != nil {
		return nil, err
	}
	if e, ok := replies[0].(Error); ok {
		return nil, e
	}
	return replies[0], nil
}

// Pipeline writes all commands at once and reads their replies, in order. Error replies are items of
// the result (type Error); the error return is for I/O and protocol failures, after which the
// connection is closed (the commands may or may not have run).
func (c *Conn) Pipeline(ctx context.Context, cmds [][]interface{}) ([]interface{}, error) {
	if err := checkArgs(cmds); err != nil { // an argument of the wrong type fails before anything is sent
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return nil, ErrClosed
	}
	if c.nc == nil {
		if err := c.connect(ctx); err != nil {
			return nil, err
		}
	}
	replies, err := c.roundTrip(ctx, cmds)
	if err != nil {
		c.drop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resp: %w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	return replies, nil
}

// aLongTimeAgo is a deadline in the past: it wakes a blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

func checkArgs(cmds [][]interface{}) error {
	for _, args := range cmds {
		for _, a := range args {
			if _, ok := a.([]byte); !ok {
				if _, err := scalarArg(a); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *Conn) roundTrip(ctx context.Context, cmds [][]interface{}) ([]interface{}, error) {
	deadline, _ := ctx.Deadline() // zero: no deadline
	if err := c.nc.SetDeadline(deadline); err != nil {
		return nil, err
	}
	stop := c.watch(ctx)
	defer stop()
	for _, args := range cmds {
		if err := WriteCommand(c.wr, args...); err != nil {
			return nil, err
		}
	}
	if err := c.wr.Flush(); err != nil {
		return nil, err
	}
	out := make([]interface{}, len(cmds))
	for i := range cmds {
		var err error
		if out[i], err = ReadReply(c.rd); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// watch wakes the round trip when ctx is cancelled; the returned stop waits for the watcher to end, so a
// late cancellation cannot disturb the next call (which sets its own deadline anyway).
func (c *Conn) watch(ctx context.Context) func() {
	if ctx.Done() == nil {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	nc := c.nc
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			_ = nc.SetDeadline(aLongTimeAgo)
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

func (c *Conn) drop() {
	if c.nc != nil {
		_ = c.nc.Close()
	}
	c.nc, c.rd, c.wr = nil, nil, nil
	c.setLive(nil)
}

func (c *Conn) setLive(nc net.Conn) {
	c.liveMu.Lock()
	c.live = nc
	c.liveMu.Unlock()
}

// Close closes the connection; later calls return ErrClosed. A call in progress is interrupted.
func (c *Conn) Close() error {
	c.liveMu.Lock()
	nc := c.live
	c.liveMu.Unlock()
	if nc != nil {
		_ = nc.SetDeadline(aLongTimeAgo) // wakes a blocked call so that it can release the lock
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shut = true
	c.drop()
	return nil
}
