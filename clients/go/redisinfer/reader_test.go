package redisinfer

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// scriptedRedis answers SCRIPT LOAD and DEL, gives the first XREAD one reply entry and then drops that
// connection (a Redis failure), and reports the last-id argument of every XREAD after that.
type scriptedRedis struct {
	ln     net.Listener
	entry  []byte // the body of the one reply
	xreads chan string
}

func (s *scriptedRedis) serve(t *testing.T) {
	first := true
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func(nc net.Conn, dropAfterReply bool) {
			defer nc.Close()
			rd := bufio.NewReader(nc)
			for {
				cmd, err := resp.ReadReply(rd)
				if err != nil {
					return
				}
				args := cmd.([]interface{})
				var out string
				switch string(args[0].([]byte)) {
				case "SCRIPT":
					out = "$3\r\nsha\r\n"
				case "DEL":
					out = ":1\r\n"
				case "XREAD":
					last := string(args[len(args)-1].([]byte))
					if last == "0-0" && dropAfterReply {
						out = fmt.Sprintf("*1\r\n*2\r\n$3\r\nkey\r\n*1\r\n*2\r\n$3\r\n5-0\r\n*6\r\n$1\r\nv\r\n$1\r\n1\r\n"+
							"$2\r\nid\r\n$2\r\nr1\r\n$4\r\nbody\r\n$%d\r\n%s\r\n", len(s.entry), s.entry)
						_, _ = nc.Write([]byte(out))
						return // the connection drops after the reply
					}
					select {
					case s.xreads <- last:
					default:
					}
					out = "*-1\r\n"
				default:
					out = "-ERR unexpected\r\n"
				}
				if _, err := nc.Write([]byte(out)); err != nil {
					return
				}
			}
		}(nc, !first)
		first = false // the first connection is the command one; the second reads replies
	}
}

func TestReaderReconnectsAndReadsOnFromTheLastEntry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	body, _ := msgpack.Marshal(msgpack.Map{{Key: "status", Value: "OK"}})
	s := &scriptedRedis{ln: ln, entry: body, xreads: make(chan string, 100)}
	go s.serve(t)
	c, err := Dial(context.Background(), "redis://"+ln.Addr().String(), Config{Model: "m", ReadBlock: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.register("r1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatalf("the reply: %v", err)
	}
	select {
	case last := <-s.xreads:
		if last != "5-0" {
			t.Fatalf("after reconnecting the reader asked from %q, want 5-0", last)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader did not read again after the connection dropped")
	}
}
