package resp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

func parse(t *testing.T, wire string) (interface{}, error) {
	t.Helper()
	return ReadReply(bufio.NewReader(strings.NewReader(wire)))
}

func TestReadReplyTypes(t *testing.T) {
	cases := []struct {
		wire string
		want interface{}
	}{
		{"+OK\r\n", "OK"},
		{"-NOSCRIPT No matching script\r\n", Error("NOSCRIPT No matching script")},
		{":42\r\n", int64(42)},
		{":-1\r\n", int64(-1)},
		{"$3\r\nabc\r\n", []byte("abc")},
		{"$0\r\n\r\n", []byte{}},
		{"$4\r\na\r\nb\r\n", []byte("a\r\nb")}, // binary-safe: CRLF inside a bulk string
		{"$-1\r\n", nil},
		{"*-1\r\n", nil},
		{"*0\r\n", []interface{}{}},
		{"*2\r\n*1\r\n$1\r\nx\r\n:7\r\n", []interface{}{[]interface{}{[]byte("x")}, int64(7)}},
		{"*2\r\n-ERR a\r\n$-1\r\n", []interface{}{Error("ERR a"), nil}},
	}
	for _, c := range cases {
		got, err := parse(t, c.wire)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %#v, %v; want %#v", c.wire, got, err, c.want)
		}
	}
}

func TestReadReplyRefusesBadInput(t *testing.T) {
	cases := []string{
		"?x\r\n",            // unknown type
		":12a\r\n",          // bad integer
		"$-2\r\n",           // bad length
		"$999999999999\r\n", // bulk string beyond MaxBulkBytes
		"$3\r\nabcd\r\n",    // bulk not ended by CRLF where its length says
		"+OK\n",             // line not ended by CRLF
		"\r\n",              // empty line
		"*99999999\r\n",     // array beyond MaxArrayItems
	}
	for _, wire := range cases {
		_, err := parse(t, wire)
		var perr *ProtocolError
		if !errors.As(err, &perr) {
			t.Errorf("%q: got %v, want a *ProtocolError", wire, err)
		}
	}
	for _, wire := range []string{"$5\r\nab", "*2\r\n:1\r\n", "+OK"} {
		if _, err := parse(t, wire); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q (truncated): got %v, want io.ErrUnexpectedEOF", wire, err)
		}
	}
}

func TestAppendCommand(t *testing.T) {
	b, err := AppendCommand(nil, "SET", []byte("k\r\n"), 12, int64(-3), uint64(7))
	if err != nil {
		t.Fatal(err)
	}
	want := "*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$2\r\n-3\r\n$1\r\n7\r\n"
	if string(b) != want {
		t.Fatalf("got %q", b)
	}
	if _, err := AppendCommand(nil, 1.5); err == nil {
		t.Fatal("a float argument was accepted")
	}
}

func TestParseURL(t *testing.T) {
	cases := map[string]Options{
		"redis://localhost":                {Network: "tcp", Addr: "localhost:6379"},
		"redis://u:p@10.0.0.1:7000/3":      {Network: "tcp", Addr: "10.0.0.1:7000", Username: "u", Password: "p", DB: 3},
		"redis://secret@h:1":               {Network: "tcp", Addr: "h:1", Password: "secret"},
		"unix:///run/redis.sock?db=2":      {Network: "unix", Addr: "/run/redis.sock", DB: 2},
		"redis://:only-password@h:2/0":     {Network: "tcp", Addr: "h:2", Password: "only-password"},
		"unix://user:pw@/tmp/r.sock":       {Network: "unix", Addr: "/tmp/r.sock", Username: "user", Password: "pw"},
		"redis://[::1]:6380":               {Network: "tcp", Addr: "[::1]:6380"},
		"redis://h:6379/":                  {Network: "tcp", Addr: "h:6379"},
		"redis://localhost/15":             {Network: "tcp", Addr: "localhost:6379", DB: 15},
		"redis://h:1/0?ignored=parameters": {Network: "tcp", Addr: "h:1"},
	}
	for raw, want := range cases {
		got, err := ParseURL(raw)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, bad := range []string{"rediss://h", "http://h", "redis://h/x", "redis://h/-1", "::"} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

// fakeServer answers each command it reads with the next canned reply; it records the commands.
type fakeServer struct {
	ln       net.Listener
	replies  chan string
	commands chan []interface{}
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, replies: make(chan string, 100), commands: make(chan []interface{}, 100)}
	t.Cleanup(func() { _ = ln.Close() })
	go s.serve()
	return s
}

func (s *fakeServer) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer nc.Close()
			rd := bufio.NewReader(nc)
			for {
				cmd, err := ReadReply(rd) // a command is an array of bulk strings: the same grammar
				if err != nil {
					return
				}
				s.commands <- cmd.([]interface{})
				reply := <-s.replies
				if reply == "hang" {
					_, _ = io.Copy(io.Discard, rd)
					return
				}
				if _, err := nc.Write([]byte(reply)); err != nil {
					return
				}
			}
		}()
	}
}

func TestPipelineKeepsOrderAndErrorRepliesAreItems(t *testing.T) {
	s := newFakeServer(t)
	ctx := context.Background()
	c, err := Dial(ctx, Options{Addr: s.ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.replies <- ":1\r\n"
	s.replies <- "-ERR no\r\n"
	s.replies <- "$1\r\nz\r\n"
	got, err := c.Pipeline(ctx, [][]interface{}{{"INCR", "a"}, {"BAD"}, {"GET", "z"}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []interface{}{int64(1), Error("ERR no"), []byte("z")}) {
		t.Fatalf("got %#v", got)
	}
	s.replies <- "-WRONGTYPE x\r\n"
	if _, err := c.Do(ctx, "GET", "k"); !errors.As(err, new(Error)) {
		t.Fatalf("Do with an error reply: %v", err)
	}
	if _, err := c.Pipeline(ctx, [][]interface{}{{"SET", "k", "v"}, {"GET", 1.5}}); err == nil {
		t.Fatal("a float argument was accepted")
	}
	s.replies <- "+PONG\r\n"
	if got, err := c.Do(ctx, "PING"); err != nil || got != "PONG" {
		t.Fatalf("after a refused argument (nothing sent): %#v, %v", got, err)
	}
	for len(s.commands) > 0 {
		if cmd := <-s.commands; string(cmd[0].([]byte)) == "SET" {
			t.Fatalf("the refused pipeline was sent: %q", cmd)
		}
	}
}

func TestAuthAndSelectOnConnect(t *testing.T) {
	s := newFakeServer(t)
	s.replies <- "+OK\r\n"
	s.replies <- "+OK\r\n"
	c, err := Dial(context.Background(), Options{Addr: s.ln.Addr().String(), Username: "u", Password: "p", DB: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	auth, sel := <-s.commands, <-s.commands
	if !reflect.DeepEqual(auth, []interface{}{[]byte("AUTH"), []byte("u"), []byte("p")}) ||
		!reflect.DeepEqual(sel, []interface{}{[]byte("SELECT"), []byte("2")}) {
		t.Fatalf("set-up commands: %q %q", auth, sel)
	}
	s.replies <- "-WRONGPASS invalid\r\n"
	if _, err := Dial(context.Background(), Options{Addr: s.ln.Addr().String(), Password: "bad"}); err == nil ||
		!strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("a refused AUTH: %v", err)
	}
}

func TestCancelledCallClosesAndTheNextOneRedials(t *testing.T) {
	s := newFakeServer(t)
	c, err := Dial(context.Background(), Options{Addr: s.ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.replies <- "hang"
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.commands
		cancel()
	}()
	if _, err := c.Do(ctx, "BLPOP", "k", "0"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	s.replies <- "+PONG\r\n"
	got, err := c.Do(context.Background(), "PING")
	if err != nil || got != "PONG" {
		t.Fatalf("after a cancelled call: %#v, %v", got, err)
	}
}

func TestCloseWakesABlockedCall(t *testing.T) {
	s := newFakeServer(t)
	c, err := Dial(context.Background(), Options{Addr: s.ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	s.replies <- "hang"
	errs := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), "XREAD", "BLOCK", "0")
		errs <- err
	}()
	<-s.commands
	_ = c.Close()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("the blocked call succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the blocked call")
	}
	if _, err := c.Do(context.Background(), "PING"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestWriteCommandMatchesAppendCommand(t *testing.T) {
	big := bytes.Repeat([]byte{7}, bigArgBytes+1)
	args := []interface{}{"XADD", "s", "*", "body", big, "n", 3, "tail", []byte("x")}
	want, err := AppendCommand(nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 16)
	if err := WriteCommand(w, args...); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("WriteCommand wrote %d bytes, AppendCommand %d, and they differ", out.Len(), len(want))
	}
	if err := WriteCommand(w, "GET", 1.5); err == nil {
		t.Fatal("a float argument was accepted")
	}
}
