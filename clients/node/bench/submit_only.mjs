// Submit-only throughput of the Node client under a published max_backlog (no worker; nothing awaited but the
// adds). Usage: node submit_only.mjs <client dir> <port> <stream> <n> <window>. Prints one JSON line.
// <client dir> may be an older checkout of clients/node (one EVALSHA per request, evalSubmit) or this one
// (sendRound: one backlog script call per chunk of 128): clients/bench_backlog.py runs both in one run.
const [dir, port, stream, nText, windowText] = process.argv.slice(2);
const { InferClient, encode } = await import(`${dir}/src/index.js`);
const n = Number(nText);
const window = Number(windowText);
const c = await InferClient.connect({ host: '127.0.0.1', port: Number(port), stream });
const batched = typeof c.sendRound === 'function';
const x = { name: 'x', datatype: 'FP32', shape: [1, 16], data: new Uint8Array(64) };
const body = encode({ model: 'affine', inputs: [x], timeout_ms: 60000 });

// The older client's submitEncoded, up to its EVALSHA: a waiter with its timer, then one script call.
function oldAdd(it) {
  const reply = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), it.waitMs);
    c.pending.set(it.id, { resolve, reject, timer });
  });
  reply.catch(() => {});
  return c.evalSubmit(it.id, it.body, '1');
}

let seq = 0;
const windows = [];
const t0 = performance.now();
for (let sent = 0; sent < n; sent += window) {
  const items = Array.from({ length: Math.min(window, n - sent) }, () => ({ id: `r${seq++}`, body, v: '1', waitMs: 600000 }));
  const t1 = performance.now();
  if (batched) await c.sendRound(items);
  else if ((await Promise.all(items.map(oldAdd))).some((added) => added === null)) throw new Error('BUSY');
  windows.push(performance.now() - t1);
}
const seconds = (performance.now() - t0) / 1000;
windows.sort((a, b) => a - b);
console.log(JSON.stringify({ client: batched ? 'node' : 'node-baseline', requests: n, seconds, rps: n / seconds,
  p50_ms: windows[Math.floor(windows.length / 2)] }));
process.exit(0); // the waiters' timers would keep the process alive
