// Command bench measures the Go client against a running worker: -mode pipelined submits -n requests in
// SubmitMany batches of -window and waits for all; -mode sequential sends them one Do at a time; -mode
// submit only adds them (SubmitMany windows, no reply awaited: use a stream no worker reads). Prints
// one JSON object: requests, seconds, requests per second, and client-side latency percentiles (submit to
// reply) in milliseconds. clients/go/cmd/bench/compare.py runs it next to the Python client.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
)

type result struct {
	Client   string  `json:"client"`
	Mode     string  `json:"mode"`
	Requests int     `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

func main() {
	url := flag.String("url", "redis://127.0.0.1:6379/0", "Redis URL")
	stream := flag.String("stream", "infer:requests", "request stream")
	model := flag.String("model", "affine", "model name")
	n := flag.Int("n", 2000, "requests")
	window := flag.Int("window", 256, "requests per SubmitMany (pipelined mode)")
	d := flag.Int("d", 16, "FP32 values per request (input shape [1, d])")
	mode := flag.String("mode", "pipelined", "pipelined, sequential or submit")
	flag.Parse()
	ctx := context.Background()
	c, err := redisinfer.Dial(ctx, *url, redisinfer.Config{Model: *model, Stream: *stream})
	if err != nil {
		fail(err)
	}
	defer c.Close()
	x := redisinfer.MustTensor("x", []int64{1, int64(*d)}, make([]float32, *d))
	r := redisinfer.Request{Inputs: []redisinfer.Tensor{x}, Timeout: 60 * time.Second}
	var latencies []time.Duration
	start := time.Now()
	switch *mode {
	case "sequential":
		latencies, err = sequential(ctx, c, r, *n)
	case "submit":
		latencies, err = submitOnly(ctx, c, r, *n, *window)
	default:
		latencies, err = pipelined(ctx, c, r, *n, *window)
	}
	if err != nil {
		fail(err)
	}
	elapsed := time.Since(start).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	_ = json.NewEncoder(os.Stdout).Encode(result{Client: "go", Mode: *mode, Requests: *n, Seconds: elapsed,
		RPS: float64(*n) / elapsed, P50ms: pct(0.5), P99ms: pct(0.99)})
}

func sequential(ctx context.Context, c *redisinfer.Client, r redisinfer.Request, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := c.Do(ctx, r); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func pipelined(ctx context.Context, c *redisinfer.Client, r redisinfer.Request, n, window int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for sent := 0; sent < n; sent += window {
		k := window
		if n-sent < k {
			k = n - sent
		}
		reqs := make([]redisinfer.Request, k)
		for i := range reqs {
			reqs[i] = r
		}
		t0 := time.Now()
		pending, err := c.SubmitMany(ctx, reqs)
		if err != nil {
			return nil, err
		}
		for _, p := range pending {
			if _, err := p.Wait(ctx); err != nil {
				return nil, err
			}
			out = append(out, time.Since(t0))
		}
	}
	return out, nil
}

// submitOnly adds the requests and waits for none; the latencies are those of each SubmitMany call.
func submitOnly(ctx context.Context, c *redisinfer.Client, r redisinfer.Request, n, window int) ([]time.Duration, error) {
	var out []time.Duration
	for sent := 0; sent < n; sent += window {
		k := window
		if n-sent < k {
			k = n - sent
		}
		reqs := make([]redisinfer.Request, k)
		for i := range reqs {
			reqs[i] = r
		}
		t0 := time.Now()
		pending, err := c.SubmitMany(ctx, reqs)
		if err != nil {
			return nil, err
		}
		for _, p := range pending {
			select {
			case <-p.Done(): // settled already: refused
				if _, err := p.Result(); err != nil {
					return nil, err
				}
			default:
			}
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
