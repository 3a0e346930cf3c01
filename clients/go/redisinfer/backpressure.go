package redisinfer

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/redis-infer/redis-infer/clients/go/resp"
)

// LimitRefresh is how long the client trusts the max_backlog it read (the Python client's REFRESH_S).
const LimitRefresh = 5 * time.Second

// submitScriptSHA is the script's SHA1, as EVALSHA wants it.
var submitScriptSHA = func() string {
	sum := sha1.Sum([]byte(SubmitScript))
	return hex.EncodeToString(sum[:])
}()

// limit caches the workers' max_backlog from <stream>:limits (docs/protocol.md §2.1). While it is 0 the
// client adds requests with a plain XADD (as the Python client does: the script costs Redis a copy of
// the body); once it is set, through SubmitScript, which checks the backlog and adds in one step. A limit
// published or changed meanwhile is seen within LimitRefresh, as by the Python client.
type limit struct {
	mu        sync.Mutex
	key       string
	value     int64
	fetchedAt time.Time
}

// get returns the cached limit, reading it again when it is older than LimitRefresh. A value that is not
// an integer reads as 0 (unbounded), as the workers and the other clients read it.
func (l *limit) get(ctx context.Context, conn *resp.Conn) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.fetchedAt.IsZero() && time.Since(l.fetchedAt) < LimitRefresh {
		return l.value, nil
	}
	raw, err := conn.Do(ctx, "HGET", l.key, "max_backlog")
	if err != nil {
		return 0, err
	}
	l.value = 0
	if b, ok := raw.([]byte); ok {
		if n, err := strconv.ParseInt(string(b), 10, 64); err == nil && n > 0 {
			l.value = n
		}
	}
	l.fetchedAt = time.Now()
	return l.value, nil
}

// addCommand is the command that adds one prepared request: XADD while no limit is published, else the
// submit script with the limit (which answers a BACKLOG error for BUSY).
func (c *Client) addCommand(prep prepared, maxBacklog int64) []interface{} {
	fields := []interface{}{"v", prep.v, "id", prep.id, "reply_to", c.replyTo, "body", prep.body}
	if maxBacklog <= 0 {
		return append([]interface{}{"XADD", c.cfg.Stream, "*"}, fields...)
	}
	return append([]interface{}{"EVALSHA", submitScriptSHA, 1, c.cfg.Stream, maxBacklog}, fields...)
}
