package redisinfer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/redisinfer"
)

// The README's example (compiled by go test, not run: it needs a worker).
func Example() {
	ctx := context.Background()
	c, err := redisinfer.Dial(ctx, "redis://127.0.0.1:6379/0", redisinfer.Config{Model: "affine"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // deletes the reply stream
	x := redisinfer.MustTensor("x", []int64{1, 3}, []float32{1, 2, 3})
	out, err := c.Infer(ctx, redisinfer.Request{Inputs: []redisinfer.Tensor{x}, Timeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	y, _ := out["y"].Float32s()
	fmt.Println(y, out["y"].Shape) // [3 5 7] [1 3]
}

func ExampleClient_SubmitMany() {
	ctx := context.Background()
	c, err := redisinfer.Dial(ctx, "redis://127.0.0.1:6379/0", redisinfer.Config{Model: "affine"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reqs := make([]redisinfer.Request, 8)
	for i := range reqs {
		x := redisinfer.MustTensor("x", []int64{1, 3}, []float32{float32(i), 0, 0})
		reqs[i] = redisinfer.Request{Inputs: []redisinfer.Tensor{x}, Timeout: 5 * time.Second}
	}
	pending, err := c.SubmitMany(ctx, reqs) // one pipeline
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pending {
		reply, err := p.Wait(ctx)
		switch {
		case errors.Is(err, redisinfer.ErrBusy):
			// back off and retry: the backlog is at max_backlog, nothing was added
		case errors.Is(err, redisinfer.ErrExpired):
			// the deadline passed before compute started
		case err != nil:
			log.Print(err)
		default:
			fmt.Println(reply.BatchSize, reply.Timing.ComputeEndNs-reply.Timing.EnqueuedNs)
		}
	}
}
