package redisinfer

// Every golden vector of docs/golden/: encoding the JSON meaning gives the body bytes exactly (through the
// generic encoder and through EncodeBody), and decoding the bytes gives the JSON meaning back (tensor
// elements against `values`, data against `data_hex`, replies through DecodeReplyBody).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
)

var goldenDir = filepath.Join("..", "..", "..", "docs", "golden")

type golden struct {
	name  string
	meta  msgpack.Map // the whole JSON file, in order
	body  msgpack.Map // its "body"
	bytes []byte
}

// parseJSON reads JSON keeping what encoding/json's maps lose: key order, and int versus float (a number
// with '.', 'e' or 'E' is a float, others are ints, exact to 64 bits).
func parseJSON(dec *json.Decoder) (interface{}, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		if x == '[' {
			out := []interface{}{}
			for dec.More() {
				v, err := parseJSON(dec)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			_, err = dec.Token()
			return out, err
		}
		out := msgpack.Map{}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseJSON(dec)
			if err != nil {
				return nil, err
			}
			out = append(out, msgpack.Pair{Key: key.(string), Value: v})
		}
		_, err = dec.Token()
		return out, err
	case json.Number:
		if strings.ContainsAny(string(x), ".eE") {
			return strconv.ParseFloat(string(x), 64)
		}
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n, nil
		}
		return strconv.ParseUint(string(x), 10, 64)
	}
	return tok, nil // string, bool, nil
}

func loadGolden(t *testing.T) []golden {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) < 7 {
		t.Fatalf("golden vectors in %s: %d files, %v", goldenDir, len(files), err)
	}
	sort.Strings(files)
	var out []golden
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		v, err := parseJSON(dec)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		meta := v.(msgpack.Map)
		g := golden{name: get(meta, "name").(string), meta: meta, body: get(meta, "body").(msgpack.Map)}
		if g.bytes, err = os.ReadFile(filepath.Join(goldenDir, get(meta, "body_file").(string))); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

func get(m msgpack.Map, key string) interface{} {
	v, _ := m.Get(key)
	return v
}

func isTensorList(key string, v interface{}) bool {
	items, ok := v.([]interface{})
	if !ok || len(items) == 0 || (key != "inputs" && key != "outputs") {
		return false
	}
	_, ok = items[0].(msgpack.Map)
	return ok
}

// wireBody is the msgpack map of a JSON meaning: tensors become {name, datatype, shape, data}.
func wireBody(t *testing.T, body msgpack.Map) msgpack.Map {
	out := msgpack.Map{}
	for _, p := range body {
		if !isTensorList(p.Key, p.Value) {
			out = append(out, p)
			continue
		}
		var tensors []interface{}
		for _, item := range p.Value.([]interface{}) {
			tm := item.(msgpack.Map)
			data, err := hex.DecodeString(get(tm, "data_hex").(string))
			if err != nil {
				t.Fatal(err)
			}
			tensors = append(tensors, msgpack.Map{{Key: "name", Value: get(tm, "name")},
				{Key: "datatype", Value: get(tm, "datatype")}, {Key: "shape", Value: get(tm, "shape")},
				{Key: "data", Value: data}})
		}
		out = append(out, msgpack.Pair{Key: p.Key, Value: tensors})
	}
	return out
}

func TestGoldenBodyFilesAreTheOnesDescribed(t *testing.T) {
	for _, g := range loadGolden(t) {
		sum := sha256.Sum256(g.bytes)
		if int64(len(g.bytes)) != get(g.meta, "body_size").(int64) || hex.EncodeToString(sum[:]) != get(g.meta, "body_sha256") {
			t.Errorf("%s: body file does not match its size and sha256", g.name)
		}
	}
}

func TestGoldenEncodesByteForByte(t *testing.T) {
	for _, g := range loadGolden(t) {
		got, err := msgpack.Marshal(wireBody(t, g.body))
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if !bytes.Equal(got, g.bytes) {
			t.Errorf("%s: encoded\n%x\nwant\n%x", g.name, got, g.bytes)
		}
	}
}

// requestFromGolden builds a Request the way a user would, with NewTensor from the typed values.
func requestFromGolden(t *testing.T, body msgpack.Map) Request {
	req := Request{Model: get(body, "model").(string)}
	for _, item := range get(body, "inputs").([]interface{}) {
		tm := item.(msgpack.Map)
		var shape []int64
		for _, d := range get(tm, "shape").([]interface{}) {
			shape = append(shape, d.(int64))
		}
		dt := Datatype(get(tm, "datatype").(string))
		tensor, err := NewTensor(get(tm, "name").(string), shape, typedValues(t, dt, flatten(get(tm, "values"))))
		if err != nil {
			t.Fatal(err)
		}
		req.Inputs = append(req.Inputs, tensor)
	}
	if v, ok := body.Get("model_version"); ok {
		req.ModelVersion = v.(string)
	}
	if v, ok := body.Get("timeout_ms"); ok {
		req.Timeout = time.Duration(v.(int64)) * time.Millisecond
	}
	if v, ok := body.Get("priority"); ok {
		req.Priority = int32(v.(int64))
	}
	if v, ok := body.Get("outputs"); ok {
		for _, name := range v.([]interface{}) {
			req.Outputs = append(req.Outputs, name.(string))
		}
	}
	if v, ok := body.Get("parameters"); ok {
		req.Parameters = v.(msgpack.Map)
	}
	return req
}

func flatten(v interface{}) []interface{} {
	items, ok := v.([]interface{})
	if !ok {
		return []interface{}{v} // a 0-d tensor's bare value
	}
	var out []interface{}
	for _, item := range items {
		if _, nested := item.([]interface{}); nested {
			out = append(out, flatten(item)...)
		} else {
			out = append(out, item)
		}
	}
	return out
}

// typedValues converts JSON elements into the Go slice of a datatype (BYTES elements are hex).
func typedValues(t *testing.T, dt Datatype, flat []interface{}) interface{} {
	if dt == BYTES {
		out := make([][]byte, len(flat))
		for i, v := range flat {
			b, err := hex.DecodeString(v.(string))
			if err != nil {
				t.Fatal(err)
			}
			out[i] = b
		}
		return out
	}
	out := reflect.ValueOf(makeSlice(dt, len(flat)))
	elem := out.Type().Elem()
	for i, v := range flat {
		rv := reflect.ValueOf(v)
		if !rv.Type().ConvertibleTo(elem) {
			t.Fatalf("%s element %#v", dt, v)
		}
		out.Index(i).Set(rv.Convert(elem))
	}
	return out.Interface()
}

func TestGoldenRequestsThroughEncodeBody(t *testing.T) {
	n := 0
	for _, g := range loadGolden(t) {
		if get(g.meta, "kind") != "request" {
			continue
		}
		n++
		req := requestFromGolden(t, g.body)
		if err := validate(req); err != nil {
			t.Errorf("%s: the client refuses it: %v", g.name, err)
		}
		got, err := EncodeBody(req)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if !bytes.Equal(got, g.bytes) {
			t.Errorf("%s: EncodeBody gave\n%x\nwant\n%x", g.name, got, g.bytes)
		}
	}
	if n < 4 {
		t.Fatalf("only %d request vectors", n)
	}
}

// canon is a comparable form of a decoded value: ints and floats stay apart, bytes as hex.
func canon(v interface{}) interface{} {
	switch x := v.(type) {
	case int64, uint64:
		return fmt.Sprintf("i:%d", x)
	case float64:
		return "f:" + strconv.FormatFloat(x, 'g', -1, 64)
	case []byte:
		return "b:" + hex.EncodeToString(x)
	case []interface{}:
		out := make([]interface{}, len(x))
		for i, item := range x {
			out[i] = canon(item)
		}
		return out
	case msgpack.Map:
		out := make([]interface{}, 0, 2*len(x))
		for _, p := range x {
			out = append(out, p.Key, canon(p.Value))
		}
		return out
	}
	return v
}

func TestGoldenDecodesToTheDocumentedMeaning(t *testing.T) {
	for _, g := range loadGolden(t) {
		got, err := msgpack.Unmarshal(g.bytes)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if want := canon(wireBody(t, g.body)); !reflect.DeepEqual(canon(got), want) {
			t.Errorf("%s: decoded\n%v\nwant\n%v", g.name, canon(got), want)
		}
		for _, key := range []string{"inputs", "outputs"} {
			if items := get(g.body, key); isTensorList(key, items) {
				checkTensorValues(t, g.name, got.(msgpack.Map), key, items.([]interface{}))
			}
		}
	}
}

func checkTensorValues(t *testing.T, name string, got msgpack.Map, key string, want []interface{}) {
	for i, item := range get(got, key).([]interface{}) {
		tensor, err := decodeTensor(item)
		if err != nil {
			t.Fatalf("%s %s[%d]: %v", name, key, i, err)
		}
		values, err := tensor.Values()
		if err != nil {
			t.Fatalf("%s %s[%d]: %v", name, key, i, err)
		}
		wantTM := want[i].(msgpack.Map)
		expected := typedValues(t, tensor.Datatype, flatten(get(wantTM, "values")))
		if reflect.ValueOf(expected).Len() == 0 && reflect.ValueOf(values).Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(values, expected) {
			t.Errorf("%s %s[%d] %s: values %v, want %v", name, key, i, tensor.Name, values, expected)
		}
	}
}

func TestGoldenRepliesThroughDecodeReplyBody(t *testing.T) {
	for _, g := range loadGolden(t) {
		if get(g.meta, "kind") != "reply" {
			continue
		}
		id := get(get(g.meta, "fields").(msgpack.Map), "id").(string)
		r, err := DecodeReplyBody(id, g.bytes)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		str := func(k string) string { s, _ := get(g.body, k).(string); return s }
		if r.ID != id || string(r.Status) != str("status") || r.Error != str("error") || r.Model != str("model") ||
			r.Worker != str("worker") {
			t.Errorf("%s: decoded %+v", g.name, r)
		}
		batch, _ := get(g.body, "batch_size").(int64)
		if r.BatchSize != batch {
			t.Errorf("%s: batch size %d, want %d", g.name, r.BatchSize, batch)
		}
		var want Timing
		if tm, ok := get(g.body, "timing").(msgpack.Map); ok {
			n := func(k string) int64 { return get(tm, k).(int64) }
			want = Timing{n("enqueued_ns"), n("read_ns"), n("batched_ns"), n("compute_start_ns"), n("compute_end_ns"),
				n("published_ns")}
		}
		if r.Timing != want {
			t.Errorf("%s: timing %+v, want %+v", g.name, r.Timing, want)
		}
		outs, _ := get(g.body, "outputs").([]interface{})
		if len(r.Outputs) != len(outs) {
			t.Errorf("%s: %d outputs, want %d", g.name, len(r.Outputs), len(outs))
		}
	}
}

func TestGoldenReplyOKValues(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(goldenDir, "reply_ok.body.msgpack"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeReplyBody("req-0001", raw)
	if err != nil {
		t.Fatal(err)
	}
	probs, _ := r.Output("probabilities")
	p, err := probs.Float32s()
	if err != nil || !reflect.DeepEqual(p, []float32{0.0625, 0.125, 0.3125, 0.5}) {
		t.Fatalf("probabilities %v, %v", p, err)
	}
	if d := r.Timing.ComputeEndNs - r.Timing.ComputeStartNs; d != 8300000 {
		t.Fatalf("compute took %d ns, want 8300000", d)
	}
}
