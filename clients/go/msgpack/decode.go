package msgpack

import (
	"encoding/binary"
	"math"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and maps Unmarshal accepts.
const MaxDepth = 64

// Unmarshal decodes exactly one msgpack value from b (trailing bytes are an error).
//
// Integers decode to int64, except values above math.MaxInt64, which decode to uint64; float32 and
// float64 decode to float64 (the int/float distinction survives); str decodes to string (it must be
// UTF-8), bin to []byte (a copy), arrays to []interface{}, maps to Map (keys must be str, order kept).
// Extension types and the reserved byte 0xc1 are refused. A declared length larger than what is left of b
// is refused before anything is allocated for it.
func Unmarshal(b []byte) (interface{}, error) {
	d := decoder{buf: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.pos != len(b) {
		return nil, errorf("%d trailing bytes after the value", len(b)-d.pos)
	}
	return v, nil
}

type decoder struct {
	buf []byte
	pos int
}

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.buf)-d.pos {
		return nil, errorf("truncated data: %d bytes needed at offset %d, %d left", n, d.pos, len(d.buf)-d.pos)
	}
	out := d.buf[d.pos : d.pos+n]
	d.pos += n
	return out, nil
}

// length reads a big-endian length of width bytes.
func (d *decoder) length(width int) (int, error) {
	b, err := d.take(width)
	if err != nil {
		return 0, err
	}
	switch width {
	case 1:
		return int(b[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(b)), nil
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(math.MaxInt32) {
		return 0, errorf("length %d too large", n)
	}
	return int(n), nil
}

func (d *decoder) value(depth int) (interface{}, error) {
	if depth > MaxDepth {
		return nil, errorf("nesting deeper than %d", MaxDepth)
	}
	head, err := d.take(1)
	if err != nil {
		return nil, err
	}
	t := head[0]
	switch {
	case t < 0x80:
		return int64(t), nil
	case t >= 0xe0:
		return int64(int8(t)), nil
	case t <= 0x8f:
		return d.mapOf(int(t&0x0f), depth)
	case t <= 0x9f:
		return d.arrayOf(int(t&0x0f), depth)
	case t <= 0xbf:
		return d.str(int(t & 0x1f))
	}
	return d.tagged(t, depth)
}

func (d *decoder) tagged(t byte, depth int) (interface{}, error) {
	switch t {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc4, 0xc5, 0xc6:
		return d.bin(1 << (t - 0xc4))
	case 0xca, 0xcb:
		return d.float(t == 0xca)
	case 0xcc, 0xcd, 0xce, 0xcf:
		return d.uint(1 << (t - 0xcc))
	case 0xd0, 0xd1, 0xd2, 0xd3:
		return d.int(1 << (t - 0xd0))
	case 0xd9, 0xda, 0xdb:
		n, err := d.length(1 << (t - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case 0xdc, 0xdd:
		n, err := d.length(2 << (t - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayOf(n, depth)
	case 0xde, 0xdf:
		n, err := d.length(2 << (t - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapOf(n, depth)
	}
	return nil, errorf("unsupported type byte 0x%02x at offset %d", t, d.pos-1)
}

func (d *decoder) bin(width int) (interface{}, error) {
	n, err := d.length(width)
	if err != nil {
		return nil, err
	}
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

func (d *decoder) str(n int) (interface{}, error) {
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, errorf("str at offset %d is not valid UTF-8", d.pos-n)
	}
	return string(b), nil
}

func (d *decoder) float(single bool) (interface{}, error) {
	if single {
		b, err := d.take(4)
		if err != nil {
			return nil, err
		}
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b))), nil
	}
	b, err := d.take(8)
	if err != nil {
		return nil, err
	}
	return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
}

func (d *decoder) uint(width int) (interface{}, error) {
	b, err := d.take(width)
	if err != nil {
		return nil, err
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	if n > math.MaxInt64 {
		return n, nil
	}
	return int64(n), nil
}

func (d *decoder) int(width int) (interface{}, error) {
	b, err := d.take(width)
	if err != nil {
		return nil, err
	}
	switch width {
	case 1:
		return int64(int8(b[0])), nil
	case 2:
		return int64(int16(binary.BigEndian.Uint16(b))), nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b))), nil
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func (d *decoder) arrayOf(n int, depth int) (interface{}, error) {
	if n > len(d.buf)-d.pos { // every item takes at least one byte
		return nil, errorf("array of %d items in %d bytes", n, len(d.buf)-d.pos)
	}
	out := make([]interface{}, n)
	for i := range out {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (d *decoder) mapOf(n int, depth int) (interface{}, error) {
	if n > (len(d.buf)-d.pos)/2 { // every entry takes at least two bytes
		return nil, errorf("map of %d entries in %d bytes", n, len(d.buf)-d.pos)
	}
	out := make(Map, n)
	for i := range out {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		key, ok := k.(string)
		if !ok {
			return nil, errorf("map key is a %T, not a str", k)
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[i] = Pair{Key: key, Value: v}
	}
	return out, nil
}
