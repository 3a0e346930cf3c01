package redisinfer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Datatype is a tensor element type, by its protocol name (docs/protocol.md §5.1).
type Datatype string

// The datatypes of protocol version 1.
const (
	BOOL   Datatype = "BOOL"
	UINT8  Datatype = "UINT8"
	UINT16 Datatype = "UINT16"
	UINT32 Datatype = "UINT32"
	UINT64 Datatype = "UINT64"
	INT8   Datatype = "INT8"
	INT16  Datatype = "INT16"
	INT32  Datatype = "INT32"
	INT64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	BYTES  Datatype = "BYTES"
)

var elementBytes = map[Datatype]int64{
	BOOL: 1, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8, INT8: 1, INT16: 2, INT32: 4, INT64: 8,
	FP16: 2, FP32: 4, FP64: 8,
}

// Float16 is one IEEE 754 binary16 value, as its bits (Go has no half-precision type).
type Float16 uint16

// Float32 converts the half-precision value to float32 (exactly: every binary16 is a binary32).
func (h Float16) Float32() float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // infinity, NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	case frac == 0:
		return math.Float32frombits(sign)
	}
	v := float32(frac) / (1 << 24) // subnormal: frac × 2^-24
	if sign != 0 {
		return -v
	}
	return v
}

// Tensor is a named, typed, shaped array: Data holds the elements little-endian, row-major (for BYTES,
// each element framed by a uint32 little-endian length).
type Tensor struct {
	Name     string
	Datatype Datatype
	Shape    []int64
	Data     []byte
}

// NewTensor packs a flat slice of values into a tensor of the given shape, the datatype following from
// the slice type: []bool BOOL, []uint8 UINT8 ... []int64 INT64, []Float16 FP16, []float32 FP32,
// []float64 FP64, [][]byte or []string BYTES. The number of values must be the product of shape.
func NewTensor(name string, shape []int64, values interface{}) (Tensor, error) {
	dt, n, err := datatypeOf(values)
	if err != nil {
		return Tensor{}, err
	}
	t := Tensor{Name: name, Datatype: dt, Shape: append([]int64(nil), shape...)}
	want, err := t.Elements()
	if err != nil {
		return Tensor{}, err
	}
	if int64(n) != want {
		return Tensor{}, invalidInput("tensor %q: %d values for shape %v (%d elements)", name, n, shape, want)
	}
	switch v := values.(type) {
	case []string:
		t.Data = packBytes(len(v), func(i int) []byte { return []byte(v[i]) })
	case [][]byte:
		t.Data = packBytes(len(v), func(i int) []byte { return v[i] })
	default:
		var buf bytes.Buffer
		buf.Grow(n * int(elementBytes[dt]))
		if err := binary.Write(&buf, binary.LittleEndian, values); err != nil {
			return Tensor{}, invalidInput("tensor %q: %v", name, err)
		}
		t.Data = buf.Bytes()
	}
	return t, nil
}

// MustTensor is NewTensor for values known to be right (examples, tests): it panics on an error.
func MustTensor(name string, shape []int64, values interface{}) Tensor {
	t, err := NewTensor(name, shape, values)
	if err != nil {
		panic(err)
	}
	return t
}

func datatypeOf(values interface{}) (Datatype, int, error) {
	switch v := values.(type) {
	case []bool:
		return BOOL, len(v), nil
	case []uint8:
		return UINT8, len(v), nil
	case []uint16:
		return UINT16, len(v), nil
	case []uint32:
		return UINT32, len(v), nil
	case []uint64:
		return UINT64, len(v), nil
	case []int8:
		return INT8, len(v), nil
	case []int16:
		return INT16, len(v), nil
	case []int32:
		return INT32, len(v), nil
	case []int64:
		return INT64, len(v), nil
	case []Float16:
		return FP16, len(v), nil
	case []float32:
		return FP32, len(v), nil
	case []float64:
		return FP64, len(v), nil
	case []string:
		return BYTES, len(v), nil
	case [][]byte:
		return BYTES, len(v), nil
	}
	return "", 0, invalidInput("no datatype for values of type %T", values)
}

func packBytes(n int, elem func(int) []byte) []byte {
	size := 0
	for i := 0; i < n; i++ {
		size += 4 + len(elem(i))
	}
	out := make([]byte, 0, size)
	for i := 0; i < n; i++ {
		e := elem(i)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(e)))
		out = append(out, e...)
	}
	return out
}

// Elements is the number of elements the shape holds (1 for a 0-d tensor); an error for a negative
// dimension or a product beyond int64.
func (t Tensor) Elements() (int64, error) {
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return 0, invalidInput("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, invalidInput("tensor %q: shape %v holds more than 2^63 elements", t.Name, t.Shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks what the client can check before sending: a known datatype, a shape of non-negative
// dimensions, data whose length matches the shape (or BYTES framing that uses it up exactly). It
// allocates nothing for the elements.
func (t Tensor) Validate() error {
	n, err := t.checkSize()
	if err == nil && t.Datatype == BYTES {
		_, err = t.splitBytes(n, false)
	}
	return err
}

// checkSize returns the number of elements, after checking the shape, the datatype and, for a fixed-size
// datatype, the length of the data.
func (t Tensor) checkSize() (int64, error) {
	n, err := t.Elements()
	if err != nil || t.Datatype == BYTES {
		return n, err
	}
	size, ok := elementBytes[t.Datatype]
	if !ok {
		return 0, invalidInput("tensor %q: unknown datatype %q", t.Name, t.Datatype)
	}
	if n > math.MaxInt64/size || int64(len(t.Data)) != n*size {
		return 0, invalidInput("tensor %q: %d data bytes, shape %v of %s needs %d × %d",
			t.Name, len(t.Data), t.Shape, t.Datatype, n, size)
	}
	return n, nil
}

// Values unpacks the data into a flat slice of the datatype's Go type (see NewTensor); for BYTES, a
// [][]byte whose elements share the tensor's data.
func (t Tensor) Values() (interface{}, error) {
	n, err := t.checkSize()
	if err != nil {
		return nil, err
	}
	if t.Datatype == BYTES {
		return t.splitBytes(n, true)
	}
	out := makeSlice(t.Datatype, int(n))
	if err := binary.Read(bytes.NewReader(t.Data), binary.LittleEndian, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return out, nil
}

func makeSlice(dt Datatype, n int) interface{} {
	switch dt {
	case BOOL:
		return make([]bool, n)
	case UINT8:
		return make([]uint8, n)
	case UINT16:
		return make([]uint16, n)
	case UINT32:
		return make([]uint32, n)
	case UINT64:
		return make([]uint64, n)
	case INT8:
		return make([]int8, n)
	case INT16:
		return make([]int16, n)
	case INT32:
		return make([]int32, n)
	case INT64:
		return make([]int64, n)
	case FP16:
		return make([]Float16, n)
	case FP32:
		return make([]float32, n)
	}
	return make([]float64, n)
}

// splitBytes walks the BYTES framing of n elements; with keep, it returns the elements.
func (t Tensor) splitBytes(n int64, keep bool) ([][]byte, error) {
	if n > int64(len(t.Data))/4 {
		return nil, invalidInput("tensor %q: %d BYTES elements cannot fit in %d bytes", t.Name, n, len(t.Data))
	}
	var out [][]byte
	if keep {
		out = make([][]byte, 0, n)
	}
	pos := 0
	for i := int64(0); i < n; i++ {
		if len(t.Data)-pos < 4 {
			return nil, invalidInput("tensor %q: BYTES element %d: length runs past the end", t.Name, i)
		}
		size32 := binary.LittleEndian.Uint32(t.Data[pos:])
		pos += 4
		if uint64(size32) > uint64(len(t.Data)-pos) {
			return nil, invalidInput("tensor %q: BYTES element %d runs past the end", t.Name, i)
		}
		size := int(size32)
		if keep {
			out = append(out, t.Data[pos:pos+size:pos+size])
		}
		pos += size
	}
	if pos != len(t.Data) {
		return nil, invalidInput("tensor %q: %d bytes after the last BYTES element", t.Name, len(t.Data)-pos)
	}
	return out, nil
}
