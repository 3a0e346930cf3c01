// Package resp is a minimal RESP2 client: commands are encoded as arrays of bulk strings, replies are
// parsed into Go values, and a Conn sends one command or a pipeline of them at a time.
package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxBulkBytes bounds one bulk string reply (Redis's own proto-max-bulk-len default is 512 MiB).
const MaxBulkBytes = 512 << 20

// MaxArrayItems bounds one array reply.
const MaxArrayItems = 1 << 24

// Error is an error reply from Redis ("-ERR ...", "-NOSCRIPT ...", "-WRONGTYPE ...").
type Error string

func (e Error) Error() string { return string(e) }

// ProtocolError is a reply that is not valid RESP2: the connection cannot be used any more.
type ProtocolError struct{ msg string }

func (e *ProtocolError) Error() string { return "resp: " + e.msg }

// AppendCommand encodes one command. Arguments may be string, []byte, int, int64 or uint64.
func AppendCommand(dst []byte, args ...interface{}) ([]byte, error) {
	dst = appendHeader(dst, '*', len(args))
	for _, a := range args {
		b, ok := a.([]byte)
		if !ok {
			var err error
			if b, err = scalarArg(a); err != nil {
				return nil, err
			}
		}
		dst = appendHeader(dst, '$', len(b))
		dst = append(append(dst, b...), '\r', '\n')
	}
	return dst, nil
}

func appendHeader(dst []byte, kind byte, n int) []byte {
	dst = append(dst, kind)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

// scalarArg is the bytes of a command argument that is not a []byte.
func scalarArg(a interface{}) ([]byte, error) {
	switch x := a.(type) {
	case string:
		return []byte(x), nil
	case int:
		return strconv.AppendInt(nil, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(nil, x, 10), nil
	case uint64:
		return strconv.AppendUint(nil, x, 10), nil
	}
	return nil, fmt.Errorf("resp: cannot send an argument of type %T", a)
}

// bigArgBytes: a []byte argument at least this long is written straight to the socket, not copied into
// the write buffer (tensor data can be megabytes).
const bigArgBytes = 32 << 10

// WriteCommand writes one command to w; large []byte arguments go through without a copy.
func WriteCommand(w *bufio.Writer, args ...interface{}) error {
	var head [24]byte
	hdr := appendHeader(head[:0], '*', len(args))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, a := range args {
		b, ok := a.([]byte)
		if !ok {
			var err error
			if b, err = scalarArg(a); err != nil {
				return err
			}
		}
		hdr = appendHeader(head[:0], '$', len(b))
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		if len(b) >= bigArgBytes { // bufio.Writer writes a large slice directly once its buffer is flushed
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if _, err := w.Write(crlf); err != nil {
			return err
		}
	}
	return nil
}

var crlf = []byte("\r\n")

// ReadReply parses one reply: a simple string is a string, an error an Error value (not a Go error
// return: it is a reply), an integer an int64, a bulk string a []byte, an array a []interface{}; the
// null bulk string and the null array are nil. The error return is for I/O and protocol failures.
func ReadReply(r *bufio.Reader) (interface{}, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, &ProtocolError{msg: "empty reply line"}
	}
	body := string(line[1:])
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return Error(body), nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, &ProtocolError{msg: fmt.Sprintf("bad integer %q", body)}
		}
		return n, nil
	case '$':
		return readBulk(r, body)
	case '*':
		return readArray(r, body)
	}
	return nil, &ProtocolError{msg: fmt.Sprintf("unexpected reply type %q", line[0])}
}

func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, &ProtocolError{msg: "reply line too long"}
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, &ProtocolError{msg: "reply line not ended by CRLF"}
	}
	return line[:len(line)-2], nil
}

func readLength(body string, max int64) (int64, error) {
	n, err := strconv.ParseInt(body, 10, 64)
	if err != nil || n < -1 || n > max {
		return 0, &ProtocolError{msg: fmt.Sprintf("bad length %q", body)}
	}
	return n, nil
}

func readBulk(r *bufio.Reader, body string) (interface{}, error) {
	n, err := readLength(body, MaxBulkBytes)
	if err != nil || n < 0 {
		return nil, err
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	if buf[n] != '\r' || buf[n+1] != '\n' {
		return nil, &ProtocolError{msg: "bulk string not ended by CRLF"}
	}
	return buf[:n:n], nil
}

func readArray(r *bufio.Reader, body string) (interface{}, error) {
	n, err := readLength(body, MaxArrayItems)
	if err != nil || n < 0 {
		return nil, err
	}
	out := make([]interface{}, 0, minInt(n, 1024))
	for i := int64(0); i < n; i++ {
		v, err := ReadReply(r)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		out = append(out, v)
	}
	return out, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func minInt(a int64, b int) int {
	if a < int64(b) {
		return int(a)
	}
	return b
}
