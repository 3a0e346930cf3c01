package redisinfer

import (
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
)

func TestNewTensorPacksEveryDatatypeLittleEndian(t *testing.T) {
	cases := []struct {
		values interface{}
		dt     Datatype
		hex    string
	}{
		{[]bool{true, false}, BOOL, "0100"},
		{[]uint8{1, 255}, UINT8, "01ff"},
		{[]uint16{1, 0xfffe}, UINT16, "0100feff"},
		{[]uint32{1, 2}, UINT32, "0100000002000000"},
		{[]uint64{1, math.MaxUint64}, UINT64, "0100000000000000ffffffffffffffff"},
		{[]int8{-1, 2}, INT8, "ff02"},
		{[]int16{1, -2}, INT16, "0100feff"},
		{[]int32{-1, 1}, INT32, "ffffffff01000000"},
		{[]int64{math.MinInt64, 1}, INT64, "00000000000000800100000000000000"},
		{[]Float16{0x3c00, 0xc000}, FP16, "003c00c0"},
		{[]float32{1, -2}, FP32, "0000803f000000c0"},
		{[]float64{0.5, 1}, FP64, "000000000000e03f000000000000f03f"},
		{[]string{"ab", ""}, BYTES, "02000000616200000000"},
		{[][]byte{{1}, {0xff, 0xfe}}, BYTES, "0100000001020000" + "00fffe"},
	}
	for _, c := range cases {
		tensor, err := NewTensor("t", []int64{2}, c.values)
		if err != nil {
			t.Fatalf("%T: %v", c.values, err)
		}
		if tensor.Datatype != c.dt || hex.EncodeToString(tensor.Data) != c.hex {
			t.Errorf("%T: %s %x, want %s %s", c.values, tensor.Datatype, tensor.Data, c.dt, c.hex)
		}
		back, err := tensor.Values()
		if err != nil {
			t.Fatalf("%T: %v", c.values, err)
		}
		want := c.values
		if s, ok := c.values.([]string); ok {
			want = [][]byte{[]byte(s[0]), []byte(s[1])}
		}
		if !reflect.DeepEqual(normalizeEmpty(back), normalizeEmpty(want)) {
			t.Errorf("%T: Values() = %#v", c.values, back)
		}
	}
}

// normalizeEmpty makes an empty []byte element equal to a nil one.
func normalizeEmpty(v interface{}) interface{} {
	if bs, ok := v.([][]byte); ok {
		out := make([]string, len(bs))
		for i, b := range bs {
			out[i] = string(b)
		}
		return out
	}
	return v
}

func TestShapesAndCounts(t *testing.T) {
	scalar := MustTensor("s", []int64{}, []float64{0.7})
	if n, _ := scalar.Elements(); n != 1 {
		t.Fatalf("0-d tensor has %d elements", n)
	}
	empty := MustTensor("e", []int64{0, 3}, []uint16{})
	if len(empty.Data) != 0 || empty.Validate() != nil {
		t.Fatalf("empty tensor: %x, %v", empty.Data, empty.Validate())
	}
	if _, err := NewTensor("x", []int64{2, 2}, []float32{1, 2, 3}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("3 values for [2 2]: %v", err)
	}
	if _, err := NewTensor("x", []int64{-1}, []float32{}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("negative dimension: %v", err)
	}
	if _, err := NewTensor("x", []int64{1 << 40, 1 << 40}, []float32{}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("2^80 elements: %v", err)
	}
	if _, err := NewTensor("x", []int64{1}, []complex64{1}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("complex64: %v", err)
	}
}

func TestValidateRefusesDataThatDoesNotMatch(t *testing.T) {
	bad := []Tensor{
		{Name: "a", Datatype: FP32, Shape: []int64{1, 3}, Data: make([]byte, 5)},
		{Name: "b", Datatype: "BF16", Shape: []int64{1}, Data: make([]byte, 2)},
		{Name: "c", Datatype: BYTES, Shape: []int64{1}, Data: []byte{5, 0, 0, 0, 'a'}},         // runs past the end
		{Name: "d", Datatype: BYTES, Shape: []int64{1}, Data: []byte{1, 0, 0, 0, 'a', 'b'}},    // trailing byte
		{Name: "e", Datatype: BYTES, Shape: []int64{2}, Data: []byte{1, 0, 0, 0, 'a', 0, 0}},   // length cut short
		{Name: "f", Datatype: BYTES, Shape: []int64{1 << 40}, Data: []byte{0, 0, 0, 0}},        // cannot fit
		{Name: "g", Datatype: FP64, Shape: []int64{1 << 61}, Data: make([]byte, 8)},            // overflows bytes
		{Name: "h", Datatype: INT64, Shape: []int64{math.MaxInt64, 2}, Data: make([]byte, 16)}, // overflows count
	}
	for _, tensor := range bad {
		if err := tensor.Validate(); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("tensor %s: %v", tensor.Name, err)
		}
	}
	if _, err := MustTensor("i", []int64{1}, []int32{1}).Float32s(); err == nil {
		t.Error("Float32s of an INT32 tensor")
	}
}

func TestFloat16ToFloat32(t *testing.T) {
	cases := map[Float16]float32{0x3c00: 1, 0xc000: -2, 0x0001: 1.0 / (1 << 24), 0x7bff: 65504, 0x0000: 0}
	for h, want := range cases {
		if got := h.Float32(); got != want {
			t.Errorf("%#04x: %v, want %v", uint16(h), got, want)
		}
	}
	if !math.IsInf(float64(Float16(0xfc00).Float32()), -1) || !math.IsNaN(float64(Float16(0x7e00).Float32())) {
		t.Error("infinity or NaN")
	}
	if math.Signbit(float64(Float16(0x8000).Float32())) != true {
		t.Error("-0")
	}
}

func TestEncodeBodyLeavesDefaultsOut(t *testing.T) {
	x := MustTensor("x", []int64{1}, []uint8{7})
	body, err := EncodeBody(Request{Model: "m", Inputs: []Tensor{x}})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := msgpack.Unmarshal(body)
	if keys := v.(msgpack.Map).Keys(); !reflect.DeepEqual(keys, []string{"model", "inputs"}) {
		t.Fatalf("keys %v", keys)
	}
	body, _ = EncodeBody(Request{Model: "m", Inputs: []Tensor{x}, Timeout: 300 * time.Microsecond})
	v, _ = msgpack.Unmarshal(body)
	if ms, _ := v.(msgpack.Map).Get("timeout_ms"); ms != int64(1) {
		t.Fatalf("a sub-millisecond timeout is sent as %v, want 1", ms)
	}
	for _, p := range []interface{}{math.NaN(), math.Inf(1), float32(math.Inf(-1)), []int{1}, nil} {
		_, err := EncodeBody(Request{Model: "m", Inputs: []Tensor{x}, Parameters: msgpack.Map{{Key: "p", Value: p}}})
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("parameter %#v: %v", p, err)
		}
	}
}

func TestValidateRequest(t *testing.T) {
	x := MustTensor("x", []int64{1}, []uint8{7})
	ok := Request{Model: "m", Inputs: []Tensor{x}, ID: "a"}
	if err := validate(ok); err != nil {
		t.Fatal(err)
	}
	bad := []Request{
		{Inputs: []Tensor{x}, ID: "a"},
		{Model: "m", ID: "a"},
		{Model: "m", Inputs: []Tensor{x, x}, ID: "a"},
		{Model: "m", Inputs: []Tensor{x}, ID: string(make([]byte, 129))},
		{Model: "m", Inputs: []Tensor{x}, ID: "\xff"},
		{Model: "m", Inputs: []Tensor{x}, ID: "a", Timeout: (math.MaxInt32 + 1) * time.Millisecond},
	}
	for i, req := range bad {
		if err := validate(req); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("request %d: %v", i, err)
		}
	}
}

func TestStatusErrorMatchesItsSentinelOnly(t *testing.T) {
	var err error = &StatusError{Status: StatusExpired, ID: "r", Message: "late"}
	if !errors.Is(err, ErrExpired) || errors.Is(err, ErrBusy) || errors.Is(err, ErrTimeout) {
		t.Fatal("errors.Is")
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Status != StatusExpired {
		t.Fatal("errors.As")
	}
	sentinels := map[Status]error{
		StatusInvalidArgument: ErrInvalidArgument, StatusMalformed: ErrMalformed,
		StatusUnsupportedVersion: ErrUnsupportedVersion, StatusTooLarge: ErrTooLarge,
		StatusModelNotFound: ErrModelNotFound, StatusBusy: ErrBusy, StatusInternal: ErrInternal,
		StatusUnavailable: ErrUnavailable, StatusTimeout: ErrTimeout, StatusExpired: ErrExpired,
	}
	for status, sentinel := range sentinels {
		if !errors.Is(&StatusError{Status: status}, sentinel) {
			t.Errorf("%s does not match its sentinel", status)
		}
	}
}

func TestDecodeReplyBodyRefusesWrongTypes(t *testing.T) {
	bad := []msgpack.Map{
		{},                                 // no status
		{{Key: "status", Value: int64(1)}}, // status not a str
		{{Key: "status", Value: "OK"}, {Key: "timing", Value: msgpack.Map{{Key: "read_ns", Value: -1}}}},
		{{Key: "status", Value: "OK"}, {Key: "timing", Value: msgpack.Map{{Key: "read_ns", Value: 1.5}}}},
		{{Key: "status", Value: "OK"}, {Key: "outputs", Value: []interface{}{msgpack.Map{{Key: "name", Value: "y"},
			{Key: "datatype", Value: "FP32"}, {Key: "shape", Value: []interface{}{1.0}}, {Key: "data", Value: []byte{}}}}}},
		{{Key: "status", Value: "OK"}, {Key: "outputs", Value: []interface{}{msgpack.Map{{Key: "name", Value: "y"},
			{Key: "datatype", Value: "FP32"}, {Key: "shape", Value: []interface{}{}}, {Key: "data", Value: "str"}}}}},
		{{Key: "status", Value: "OK"}, {Key: "batch_size", Value: "8"}},
	}
	for i, m := range bad {
		body, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeReplyBody("r", body); err == nil {
			t.Errorf("reply %d was accepted", i)
		}
	}
	body, _ := msgpack.Marshal(msgpack.Map{{Key: "status", Value: "EXPIRED"}, {Key: "future_key", Value: "ignored"},
		{Key: "timing", Value: msgpack.Map{{Key: "read_ns", Value: 5}}}})
	r, err := DecodeReplyBody("r", body)
	if err != nil || r.Timing.ReadNs != 5 || r.Timing.ComputeStartNs != 0 || r.Timing.ReadNs-r.Timing.ComputeStartNs != 5 {
		t.Fatalf("%+v, %v", r, err)
	}
}

func TestTypedAccessorsCheckTheDatatype(t *testing.T) {
	wrap := func(f interface{}) func(Tensor) (interface{}, error) {
		return func(x Tensor) (interface{}, error) {
			out := reflect.ValueOf(f).Call([]reflect.Value{reflect.ValueOf(x)})
			err, _ := out[1].Interface().(error)
			return out[0].Interface(), err
		}
	}
	accessors := map[Datatype]func(Tensor) (interface{}, error){
		FP32: wrap(Tensor.Float32s), FP64: wrap(Tensor.Float64s), FP16: wrap(Tensor.Float16s),
		INT8: wrap(Tensor.Int8s), INT16: wrap(Tensor.Int16s), INT32: wrap(Tensor.Int32s), INT64: wrap(Tensor.Int64s),
		UINT8: wrap(Tensor.Uint8s), UINT16: wrap(Tensor.Uint16s), UINT32: wrap(Tensor.Uint32s),
		UINT64: wrap(Tensor.Uint64s), BOOL: wrap(Tensor.Bools), BYTES: wrap(Tensor.ByteStrings),
	}
	values := map[Datatype]interface{}{
		FP32: []float32{1.5}, FP64: []float64{-2.25}, FP16: []Float16{0x3c00}, INT8: []int8{-8}, INT16: []int16{-16},
		INT32: []int32{-32}, INT64: []int64{-64}, UINT8: []uint8{8}, UINT16: []uint16{16}, UINT32: []uint32{32},
		UINT64: []uint64{64}, BOOL: []bool{true}, BYTES: [][]byte{[]byte("b")},
	}
	for dt, get := range accessors {
		tensor := MustTensor("t", []int64{1}, values[dt])
		got, err := get(tensor)
		if err != nil || !reflect.DeepEqual(got, values[dt]) {
			t.Errorf("%s: %#v, %v", dt, got, err)
		}
		other := MustTensor("o", []int64{1}, []float64{0})
		if dt == FP64 {
			other = MustTensor("o", []int64{1}, []float32{0})
		}
		if _, err := get(other); err == nil {
			t.Errorf("%s accessor accepted a %s tensor", dt, other.Datatype)
		}
	}
}
