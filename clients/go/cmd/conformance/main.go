// Command conformance drives the Go client through the live conformance scenarios against a real worker
// serving the affine model (x: FP32 [N, D] -> y = 2x + 1, s = sum(x, axis 1)); the same scenarios as
// clients/node/conformance/run.js. Usage: conformance <host> <port> <stream>. Prints one JSON line per
// scenario {"name", "ok", "detail"}; exits 1 if any failed. CONFORMANCE_ONLY=a,b runs only those. After
// them come the scenarios of spec.go, rules of the protocol this driver checks beyond the shared checklist.
// The scenarios of backlog.go run only when CONFORMANCE_ONLY names them.
// CONFORMANCE_URL: the URL the clients connect with (credentials of an ACL user), instead of host and port.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
)

type env struct {
	url    string
	addr   string
	stream string
	client *redisinfer.Client
}

type scenario struct {
	name string
	run  func(ctx context.Context, e *env) error
}

var scenarios = []scenario{
	{"ok", scenarioOK},
	{"timing_subtracts", scenarioTiming},
	{"outputs_subset", scenarioOutputsSubset},
	{"batching", scenarioBatching},
	{"invalid_argument", scenarioInvalidArgument},
	{"model_not_found", scenarioModelNotFound},
	{"malformed", scenarioMalformed},
	{"unsupported_version", scenarioUnsupportedVersion},
	{"too_large", scenarioTooLarge},
	{"expired", scenarioExpired},
	{"client_timeout", scenarioClientTimeout},
	{"busy", scenarioBusy},
	{"hostile_then_serves", scenarioHostile},
	{"close_deletes_reply_stream", scenarioCloseDeletes},
}

type result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: conformance <host> <port> <stream>")
		os.Exit(2)
	}
	addr := net.JoinHostPort(os.Args[1], os.Args[2])
	e := &env{url: "redis://" + addr, addr: addr, stream: os.Args[3]}
	if url := os.Getenv("CONFORMANCE_URL"); url != "" { // the client connects otherwise (an ACL user)
		e.url = url
	}
	ctx := context.Background()
	client, err := redisinfer.Dial(ctx, e.url, redisinfer.Config{Model: "affine", Stream: e.stream, Timeout: 20 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	e.client = client
	only := map[string]bool{}
	for _, name := range strings.Split(os.Getenv("CONFORMANCE_ONLY"), ",") {
		if name != "" {
			only[name] = true
		}
	}
	failed := 0
	out := json.NewEncoder(os.Stdout)
	all := append(append(append([]scenario{}, scenarios...), specScenarios...), namedOnly...)
	for k, s := range all {
		if (len(only) > 0 || k >= len(all)-len(namedOnly)) && !only[s.name] {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := s.run(sctx, e)
		cancel()
		r := result{Name: s.name, OK: err == nil}
		if err != nil {
			failed++
			r.Detail = err.Error()
		}
		_ = out.Encode(r)
	}
	if err := client.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		failed++
	}
	if failed > 0 {
		os.Exit(1)
	}
}
