package redisinfer

import (
	"fmt"
	"math"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/msgpack"
)

// ProtocolVersion is the `v` field this client writes and the only one it reads.
const ProtocolVersion = "1"

// Request is one inference request. Only Inputs is required (Model defaults to the client's).
type Request struct {
	Inputs       []Tensor
	Model        string        // the model to run; empty: Config.Model
	ModelVersion string        // empty: whatever version the worker serves
	Timeout      time.Duration // deadline after enqueueing, sent as timeout_ms (whole ms, at least 1); 0: none
	Priority     int32         // higher is more urgent
	Outputs      []string      // the outputs wanted; empty: all
	Parameters   msgpack.Map   // str → string, integer, float or bool, written in this order
	ID           string        // the request id; empty: a random one
	Wait         time.Duration // how long the client waits for the reply; 0: Timeout + 1 s, else Config.Timeout
}

// Timing is a reply's timing trace: wall-clock nanoseconds since the Unix epoch, 0 for a step not
// reached (docs/protocol.md §4.1). enqueued_ns is the Redis server's clock, the others the worker's.
type Timing struct {
	EnqueuedNs     int64
	ReadNs         int64
	BatchedNs      int64
	ComputeStartNs int64
	ComputeEndNs   int64
	PublishedNs    int64
}

// Reply is a decoded reply entry.
type Reply struct {
	ID        string
	Status    Status
	Error     string // the worker's explanation when Status is not OK
	Model     string
	Worker    string
	BatchSize int64 // rows in the batch this request ran in (OK replies)
	Timing    Timing
	Outputs   []Tensor
}

// Output returns the output tensor called name.
func (r *Reply) Output(name string) (Tensor, bool) {
	for _, t := range r.Outputs {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

func tensorMap(t Tensor) msgpack.Map {
	return msgpack.Map{
		{Key: "name", Value: t.Name},
		{Key: "datatype", Value: string(t.Datatype)},
		{Key: "shape", Value: t.Shape},
		{Key: "data", Value: t.Data},
	}
}

// EncodeBody writes the msgpack body of req as the reference encoder does (docs/protocol.md §12: keys in
// its order, optional keys with default values left out), so golden vectors are reproduced byte for
// byte. It checks only what it must to write the map (parameter value types); Client.Submit validates
// tensors first, EncodeBody alone lets a tool send what a worker should refuse.
func EncodeBody(req Request) ([]byte, error) {
	inputs := make([]interface{}, len(req.Inputs))
	size := 256 // the map's keys and small values
	for i, t := range req.Inputs {
		inputs[i] = tensorMap(t)
		size += len(t.Data) + len(t.Name) + 16 + 9*len(t.Shape)
	}
	body := msgpack.Map{{Key: "model", Value: req.Model}, {Key: "inputs", Value: inputs}}
	if req.ModelVersion != "" {
		body = append(body, msgpack.Pair{Key: "model_version", Value: req.ModelVersion})
	}
	if req.Timeout > 0 {
		ms := int64(req.Timeout / time.Millisecond)
		if ms < 1 {
			ms = 1
		}
		body = append(body, msgpack.Pair{Key: "timeout_ms", Value: ms})
	}
	if req.Priority != 0 {
		body = append(body, msgpack.Pair{Key: "priority", Value: req.Priority})
	}
	if len(req.Outputs) > 0 {
		body = append(body, msgpack.Pair{Key: "outputs", Value: req.Outputs})
	}
	if len(req.Parameters) > 0 {
		if err := checkParameters(req.Parameters); err != nil {
			return nil, err
		}
		body = append(body, msgpack.Pair{Key: "parameters", Value: req.Parameters})
	}
	return msgpack.Append(make([]byte, 0, size), body) // sized once: tensor data can be megabytes
}

func checkParameters(params msgpack.Map) error {
	for _, p := range params {
		switch v := p.Value.(type) {
		case string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		case float32:
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return invalidInput("parameter %q is %v: floats must be finite", p.Key, v)
			}
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return invalidInput("parameter %q is %v: floats must be finite", p.Key, v)
			}
		default:
			return invalidInput("parameter %q is a %T: str, int, float or bool only", p.Key, p.Value)
		}
	}
	return nil
}

// DecodeReplyBody decodes a reply body (docs/protocol.md §4.1). Unknown keys are ignored; a missing
// timing key reads as 0; a value of the wrong type is an error.
func DecodeReplyBody(id string, body []byte) (*Reply, error) {
	v, err := msgpack.Unmarshal(body)
	if err != nil {
		return nil, err
	}
	m, ok := v.(msgpack.Map)
	if !ok {
		return nil, fmt.Errorf("reply body is a %T, not a map", v)
	}
	r := &Reply{ID: id}
	d := fieldReader{m: m}
	r.Status = Status(d.str("status", true))
	r.Error = d.str("error", false)
	r.Model = d.str("model", false)
	r.Worker = d.str("worker", false)
	r.BatchSize = d.int("batch_size")
	r.Timing = d.timing()
	r.Outputs = d.tensors("outputs")
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// fieldReader reads typed values out of a decoded map, keeping the first error.
type fieldReader struct {
	m   msgpack.Map
	err error
}

func (d *fieldReader) fail(format string, args ...interface{}) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *fieldReader) str(key string, required bool) string {
	v, ok := d.m.Get(key)
	if !ok || v == nil {
		if required {
			d.fail("reply has no %q", key)
		}
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.fail("reply %q is a %T, not a str", key, v)
	}
	return s
}

func (d *fieldReader) int(key string) int64 {
	v, ok := d.m.Get(key)
	if !ok || v == nil {
		return 0
	}
	n, ok := v.(int64)
	if !ok || n < 0 {
		d.fail("%q is %#v, not a non-negative int below 2^63", key, v)
	}
	return n
}

func (d *fieldReader) timing() Timing {
	v, ok := d.m.Get("timing")
	if !ok || v == nil {
		return Timing{}
	}
	m, ok := v.(msgpack.Map)
	if !ok {
		d.fail("reply timing is a %T, not a map", v)
		return Timing{}
	}
	t := fieldReader{m: m}
	out := Timing{
		EnqueuedNs: t.int("enqueued_ns"), ReadNs: t.int("read_ns"), BatchedNs: t.int("batched_ns"),
		ComputeStartNs: t.int("compute_start_ns"), ComputeEndNs: t.int("compute_end_ns"),
		PublishedNs: t.int("published_ns"),
	}
	if t.err != nil {
		d.fail("reply timing: %v", t.err)
	}
	return out
}

func (d *fieldReader) tensors(key string) []Tensor {
	v, ok := d.m.Get(key)
	if !ok || v == nil {
		return nil
	}
	items, ok := v.([]interface{})
	if !ok {
		d.fail("%q is a %T, not an array", key, v)
		return nil
	}
	out := make([]Tensor, 0, len(items))
	for i, item := range items {
		t, err := decodeTensor(item)
		if err != nil {
			d.fail("%s[%d]: %v", key, i, err)
			return nil
		}
		out = append(out, t)
	}
	return out
}

func decodeTensor(v interface{}) (Tensor, error) {
	m, ok := v.(msgpack.Map)
	if !ok {
		return Tensor{}, fmt.Errorf("a %T, not a tensor map", v)
	}
	d := fieldReader{m: m}
	t := Tensor{Name: d.str("name", true), Datatype: Datatype(d.str("datatype", true))}
	shape, _ := m.Get("shape")
	dims, ok := shape.([]interface{})
	if !ok {
		return Tensor{}, fmt.Errorf("shape is a %T, not an array", shape)
	}
	for _, dim := range dims {
		n, ok := dim.(int64)
		if !ok || n < 0 {
			return Tensor{}, fmt.Errorf("shape dimension %#v is not a non-negative int", dim)
		}
		t.Shape = append(t.Shape, n)
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	data, _ := m.Get("data")
	if t.Data, ok = data.([]byte); !ok {
		return Tensor{}, fmt.Errorf("data is a %T, not a bin", data)
	}
	return t, d.err
}
