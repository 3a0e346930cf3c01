package msgpack

import (
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func mustHex(t *testing.T, v interface{}) string {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatalf("Marshal(%#v): %v", v, err)
	}
	return hex.EncodeToString(b)
}

func TestIntegersUseTheSmallestFormat(t *testing.T) {
	cases := []struct {
		n    int64
		want string
	}{
		{0, "00"}, {127, "7f"}, {128, "cc80"}, {255, "ccff"}, {256, "cd0100"}, {65535, "cdffff"},
		{65536, "ce00010000"}, {1 << 32, "cf0000000100000000"}, {-1, "ff"}, {-32, "e0"}, {-33, "d0df"},
		{-128, "d080"}, {-129, "d1ff7f"}, {-32768, "d18000"}, {-32769, "d2ffff7fff"},
		{-2147483649, "d3ffffffff7fffffff"}, {math.MinInt64, "d38000000000000000"},
		{math.MaxInt64, "cf7fffffffffffffff"},
	}
	for _, c := range cases {
		if got := mustHex(t, c.n); got != c.want {
			t.Errorf("encode %d = %s, want %s", c.n, got, c.want)
		}
		back, err := Unmarshal(mustBytes(t, c.want))
		if err != nil || back != c.n {
			t.Errorf("decode %s = %#v, %v; want int64 %d", c.want, back, err, c.n)
		}
	}
}

func mustBytes(t *testing.T, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLargeUnsignedDecodesAsUint64(t *testing.T) {
	v, err := Unmarshal(mustBytes(t, "cfffffffffffffffff"))
	if err != nil || v != uint64(math.MaxUint64) {
		t.Fatalf("got %#v, %v", v, err)
	}
	if got := mustHex(t, uint64(math.MaxUint64)); got != "cfffffffffffffffff" {
		t.Fatalf("encode MaxUint64 = %s", got)
	}
}

func TestIntegralFloatStaysAFloat(t *testing.T) {
	if got := mustHex(t, 3.0); got != "cb4008000000000000" {
		t.Fatalf("3.0 = %s", got)
	}
	if got := mustHex(t, 3); got != "03" {
		t.Fatalf("3 = %s", got)
	}
	if got := mustHex(t, float32(0.5)); got != "cb3fe0000000000000" {
		t.Fatalf("float32 0.5 = %s (floats are written as float64)", got)
	}
	v, err := Unmarshal(mustBytes(t, "cb4008000000000000"))
	if err != nil || v != 3.0 {
		t.Fatalf("decode 3.0 = %#v, %v", v, err)
	}
	v, err = Unmarshal(mustBytes(t, "ca3f000000"))
	if err != nil || v != 0.5 {
		t.Fatalf("decode float32 0.5 = %#v, %v", v, err)
	}
}

func TestLengthFormats(t *testing.T) {
	for _, c := range []struct {
		n        int
		str, bin string
	}{
		{0, "a0", "c400"}, {31, "bf", "c41f"}, {32, "d920", "c420"}, {255, "d9ff", "c4ff"},
		{256, "da0100", "c50100"}, {65536, "db00010000", "c600010000"},
	} {
		s := strings.Repeat("x", c.n)
		if got := mustHex(t, s); got[:len(c.str)] != c.str {
			t.Errorf("str of %d: header %s, want %s", c.n, got[:len(c.str)], c.str)
		}
		if got := mustHex(t, []byte(s)); got[:len(c.bin)] != c.bin {
			t.Errorf("bin of %d: header %s, want %s", c.n, got[:len(c.bin)], c.bin)
		}
		back, err := Unmarshal(mustBytes(t, mustHex(t, s)))
		if err != nil || back != s {
			t.Errorf("str of %d does not round-trip: %v", c.n, err)
		}
	}
	if got := mustHex(t, make([]interface{}, 16))[:6]; got != "dc0010" {
		t.Errorf("array of 16: %s", got)
	}
}

func TestMapKeepsWireOrder(t *testing.T) {
	m := Map{{Key: "z", Value: int64(1)}, {Key: "a", Value: []interface{}{"x", []byte{1}, nil, true}}}
	b, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Fatalf("round trip: %#v", back)
	}
	if v, ok := back.(Map).Get("a"); !ok || len(v.([]interface{})) != 4 {
		t.Fatalf("Get(a) = %#v, %v", v, ok)
	}
	if got := mustHex(t, map[string]interface{}{"b": 1, "a": 2}); got != "82a16102a16201" {
		t.Fatalf("a Go map is written with sorted keys: %s", got)
	}
}

func TestBadInputIsAnError(t *testing.T) {
	bad := []string{
		"",                                      // nothing
		"a1",                                    // str of 1, no byte
		"c1",                                    // reserved
		"92",                                    // array of 2, no items
		"a2ff61",                                // str not UTF-8
		"c4",                                    // bin without length
		"0102",                                  // trailing bytes
		"81a161",                                // map value missing
		"8101",                                  // map key not a str
		"d40100",                                // fixext: extension types are refused
		"dd7fffffff",                            // array of 2^31-1 items in 0 bytes
		"df7fffffff",                            // map of 2^31-1 entries in 0 bytes
		"c6ffffffff",                            // bin of 4 GiB
		"db0000000a616263",                      // str of 10, 3 bytes
		"cb000000",                              // truncated float64
		"d3000000000000",                        // truncated int64
		strings.Repeat("91", MaxDepth+2) + "00", // nesting too deep
	}
	for _, h := range bad {
		_, err := Unmarshal(mustBytes(t, h))
		var merr *Error
		if !errors.As(err, &merr) {
			t.Errorf("Unmarshal(%s): %v, want a *msgpack.Error", h, err)
		}
	}
}

func TestUnsupportedGoTypeIsAnError(t *testing.T) {
	_, err := Marshal(Map{{Key: "k", Value: struct{}{}}})
	var merr *Error
	if !errors.As(err, &merr) || !strings.Contains(err.Error(), `"k"`) {
		t.Fatalf("got %v", err)
	}
}

func TestBinDecodesToACopy(t *testing.T) {
	src := mustBytes(t, "c40201ff")
	v, err := Unmarshal(src)
	if err != nil {
		t.Fatal(err)
	}
	src[2] = 0
	if !reflect.DeepEqual(v, []byte{1, 0xff}) {
		t.Fatalf("decoded bin shares the input buffer: %v", v)
	}
}
