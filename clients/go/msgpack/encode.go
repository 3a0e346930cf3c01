// Package msgpack is the subset of MessagePack the redis-infer protocol needs, with the reference
// encoder's conventions (docs/protocol.md §12): the smallest integer and length formats, floats as
// float64, text as str and raw bytes as bin, map keys in the order given. Go keeps what other
// languages lose: int and float are distinct types, and 64-bit integers are exact.
package msgpack

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
)

// Pair is one entry of a Map.
type Pair struct {
	Key   string
	Value interface{}
}

// Map is a msgpack map with string keys, in wire order (encoding writes the pairs in this order, and
// decoding keeps the order they came in).
type Map []Pair

// Get returns the value of key and whether it is present (the first one, if a key repeats).
func (m Map) Get(key string) (interface{}, bool) {
	for _, p := range m {
		if p.Key == key {
			return p.Value, true
		}
	}
	return nil, false
}

// Keys returns the keys in wire order.
func (m Map) Keys() []string {
	out := make([]string, len(m))
	for i, p := range m {
		out[i] = p.Key
	}
	return out
}

// Error is any encoding or decoding failure of this package.
type Error struct{ msg string }

func (e *Error) Error() string { return "msgpack: " + e.msg }

func errorf(format string, args ...interface{}) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}

// Marshal encodes v. Supported: nil, bool, every Go integer type, float32 and float64 (both written as
// float64), string (str), []byte (bin), []interface{}, []string, []int, []int64, Map, and
// map[string]interface{} (keys sorted, for a deterministic encoding).
func Marshal(v interface{}) ([]byte, error) {
	return Append(make([]byte, 0, 64), v)
}

// Append encodes v (as Marshal does) at the end of dst.
func Append(dst []byte, v interface{}) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, 0xc0), nil
	case bool:
		if x {
			return append(dst, 0xc3), nil
		}
		return append(dst, 0xc2), nil
	case int:
		return AppendInt(dst, int64(x)), nil
	case int8:
		return AppendInt(dst, int64(x)), nil
	case int16:
		return AppendInt(dst, int64(x)), nil
	case int32:
		return AppendInt(dst, int64(x)), nil
	case int64:
		return AppendInt(dst, x), nil
	case uint:
		return AppendUint(dst, uint64(x)), nil
	case uint8:
		return AppendUint(dst, uint64(x)), nil
	case uint16:
		return AppendUint(dst, uint64(x)), nil
	case uint32:
		return AppendUint(dst, uint64(x)), nil
	case uint64:
		return AppendUint(dst, x), nil
	case float32:
		return AppendFloat(dst, float64(x)), nil
	case float64:
		return AppendFloat(dst, x), nil
	case string:
		return AppendString(dst, x), nil
	case []byte:
		return AppendBin(dst, x), nil
	}
	return appendContainer(dst, v)
}

func appendContainer(dst []byte, v interface{}) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case []interface{}:
		dst = AppendArrayHeader(dst, len(x))
		for _, item := range x {
			if dst, err = Append(dst, item); err != nil {
				return nil, err
			}
		}
		return dst, nil
	case []string:
		dst = AppendArrayHeader(dst, len(x))
		for _, s := range x {
			dst = AppendString(dst, s)
		}
		return dst, nil
	case []int64:
		dst = AppendArrayHeader(dst, len(x))
		for _, n := range x {
			dst = AppendInt(dst, n)
		}
		return dst, nil
	case []int:
		dst = AppendArrayHeader(dst, len(x))
		for _, n := range x {
			dst = AppendInt(dst, int64(n))
		}
		return dst, nil
	case Map:
		return appendMap(dst, x)
	case map[string]interface{}:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		m := make(Map, len(keys))
		for i, k := range keys {
			m[i] = Pair{Key: k, Value: x[k]}
		}
		return appendMap(dst, m)
	}
	return nil, errorf("cannot encode a %T", v)
}

func appendMap(dst []byte, m Map) ([]byte, error) {
	dst = AppendMapHeader(dst, len(m))
	var err error
	for _, p := range m {
		dst = AppendString(dst, p.Key)
		if dst, err = Append(dst, p.Value); err != nil {
			return nil, fmt.Errorf("%w (under key %q)", err, p.Key)
		}
	}
	return dst, nil
}

// AppendInt writes n in the smallest msgpack integer format that holds it (as msgpack-python does:
// non-negative values use the positive fixint and uint formats).
func AppendInt(dst []byte, n int64) []byte {
	if n >= 0 {
		return AppendUint(dst, uint64(n))
	}
	switch {
	case n >= -32:
		return append(dst, byte(n))
	case n >= math.MinInt8:
		return append(dst, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(n))
}

// AppendUint writes n in the smallest msgpack integer format that holds it.
func AppendUint(dst []byte, n uint64) []byte {
	switch {
	case n < 128:
		return append(dst, byte(n))
	case n <= math.MaxUint8:
		return append(dst, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), n)
}

// AppendFloat writes x as a float64.
func AppendFloat(dst []byte, x float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(x))
}

// AppendString writes s as a msgpack str (fixstr, str8, str16 or str32).
func AppendString(dst []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

// AppendBin writes b as a msgpack bin (bin8, bin16 or bin32).
func AppendBin(dst []byte, b []byte) []byte {
	n := len(b)
	switch {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}

// AppendArrayHeader writes the header of an array of n items.
func AppendArrayHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

// AppendMapHeader writes the header of a map of n entries.
func AppendMapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdf), uint32(n))
}
