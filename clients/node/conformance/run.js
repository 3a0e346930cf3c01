// The live conformance scenarios: drives InferClient against a real worker serving the affine model
// (x: FP32 [N, D] -> y = 2x + 1, s = sum(x, axis 1)). Usage: node run.js <host> <port> <stream>.
// Prints one JSON line per scenario {name, ok, detail}; exits 1 if any failed. CONFORMANCE_ONLY=a,b runs only
// those (the scenarios of `namedOnly` run only when named). CONFORMANCE_URL: redis://user:password@host:port,
// the ACL user the clients connect as, instead of host and port.
import { InferClient, RedisConnection, encode, Float64, Expired, InvalidArgument, Malformed, ModelNotFound,
  TooLarge, UnsupportedVersion, Busy, Timeout, SCRIPT_CHUNK } from '../src/index.js';

const [hostArg, portText, stream] = process.argv.slice(2);
const url = process.env.CONFORMANCE_URL ? new URL(process.env.CONFORMANCE_URL) : null;
const host = url?.hostname ?? hostArg;
const port = Number(url?.port || portText);
const user = url ? { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) } : {};
const x = (rows, d = 3, base = 0) => ({
  name: 'x', datatype: 'FP32', shape: [rows, d], data: Array.from({ length: rows * d }, (_, i) => base + i),
});

async function expectError(promise, Cls) {
  try {
    const r = await promise;
    throw new Error(`expected ${Cls.name}, got ${r.status}`);
  } catch (err) {
    if (!(err instanceof Cls)) throw err;
    if (err.status !== 'TIMEOUT' && err.status !== 'BUSY' && !err.reply) throw new Error('error without its reply');
    return err;
  }
}

const scenarios = {
  async ok(c) {
    const out = await c.infer({ model: 'affine', inputs: [x(2)], timeoutMs: 10000 });
    const y = out.y.values.flat();
    const want = [1, 3, 5, 7, 9, 11];
    if (JSON.stringify(y) !== JSON.stringify(want)) throw new Error(`y = ${y}`);
    if (JSON.stringify(out.s.values) !== JSON.stringify([3, 12])) throw new Error(`s = ${out.s.values}`);
  },
  async timing_subtracts(c) {
    const r = await c.submit({ model: 'affine', inputs: [x(1)] });
    const t = r.timing;
    const all = Object.values(t);
    if (!all.every((v) => typeof v === 'bigint')) throw new Error('timing not all BigInt');
    if (t.published_ns - t.enqueued_ns <= 0n || t.compute_end_ns < t.compute_start_ns) throw new Error('order');
  },
  async outputs_subset(c) {
    const r = await c.submit({ model: 'affine', inputs: [x(1)], outputs: ['s'] });
    if (r.outputs.map((o) => o.name).join() !== 's') throw new Error(`outputs ${r.outputs.map((o) => o.name)}`);
  },
  async batching(c) {
    const reqs = Array.from({ length: 32 }, (_, i) => ({ model: 'affine', inputs: [x(1, 3, i)], timeoutMs: 20000 }));
    const results = await c.submitMany(reqs);
    results.forEach((res, i) => {
      if (!res.ok) throw res.error;
      if (res.reply.outputs[0].values[0][0] !== 2 * i + 1) throw new Error(`reply ${i} mismatched`);
    });
    const biggest = Math.max(...results.map((res) => res.reply.batchSize));
    if (biggest < 2) throw new Error('32 pipelined requests never shared a batch');
  },
  async invalid_argument(c) {
    await expectError(c.submit({ model: 'affine', inputs: [{ ...x(1), name: 'nope' }] }), InvalidArgument);
    await expectError(c.submit({ model: 'affine', inputs: [{ ...x(1), data: new Uint8Array(5) }] }), InvalidArgument);
  },
  async model_not_found(c) {
    const err = await expectError(c.submit({ model: 'no-such-model', inputs: [x(1)] }), ModelNotFound);
    if (err.reply.id === undefined) throw new Error('no id');
  },
  async malformed(c) {
    await expectError(c.submitEncoded('m1', new Uint8Array([0xc1])), Malformed);
    await expectError(c.submitEncoded('m2', encode([1, 2])), Malformed);
    await expectError(c.submitEncoded('m3', encode({ model: 'affine' })), Malformed);
    await expectError(c.submitEncoded('m4', encode({ model: 'affine', inputs: [x(1)].map((t) => ({
      name: t.name, datatype: t.datatype, shape: [new Float64(1), 3], data: new Uint8Array(12) })) })), Malformed);
  },
  async unsupported_version(c) {
    const body = encode({ model: 'affine', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: new Uint8Array(4) }] });
    for (const v of ['2', '01', ' 1']) await expectError(c.submitEncoded(`uv-${v.trim()}-${v.length}`, body, { v }), UnsupportedVersion);
  },
  async too_large(c) {
    const t = { name: 'x', datatype: 'FP32', shape: [2 ** 32, 1], data: new Uint8Array(4) };
    await expectError(c.submit({ model: 'affine', inputs: [t] }), TooLarge);
  },
  async expired(c) {
    const err = await expectError(c.submit({ model: 'affine', inputs: [x(1)], timeoutMs: 1 }), Expired);
    const t = err.reply.timing;
    if (t.compute_start_ns !== 0n || t.enqueued_ns <= 0n) throw new Error('EXPIRED timing');
    if (t.read_ns - t.compute_start_ns <= 0n) throw new Error('not subtractable'); // mixed types would throw
  },
  async client_timeout(c) {
    const other = await InferClient.connect({ host, port, ...user, stream: `${stream}:nobody` });
    try {
      await expectError(other.submit({ model: 'affine', inputs: [x(1)] }, { timeoutMs: 200 }), Timeout);
    } finally {
      await other.close();
    }
  },
  async busy(c) {
    const s = `${stream}:busy`;
    const raw = await RedisConnection.connect({ host, port });
    try {
      await raw.command('HSET', `${s}:limits`, 'max_backlog', '1');
      await raw.command('XADD', s, '*', 'filler', '1');
      const other = await InferClient.connect({ host, port, stream: s });
      try {
        await expectError(other.submit({ model: 'affine', inputs: [x(1)] }), Busy);
        const len = await raw.command('XLEN', s);
        if (len !== 1) throw new Error(`Busy request was added anyway: XLEN ${len}`);
      } finally {
        await other.close();
      }
    } finally {
      raw.close();
    }
  },
  async hostile_then_serves(c) {
    const bodies = [new Uint8Array(), new Uint8Array(1000).fill(0xdf), encode('x'), encode({ inputs: 'x' })];
    for (const [i, b] of bodies.entries()) await expectError(c.submitEncoded(`h${i}`, b), Malformed);
    await scenarios.ok(c);
  },
  async close_deletes_reply_stream(c) {
    const other = await InferClient.connect({ host, port, ...user, stream });
    await other.infer({ model: 'affine', inputs: [x(1)] });
    const raw = await RedisConnection.connect({ host, port });
    try {
      if ((await raw.command('EXISTS', other.replyTo)) !== 1) throw new Error('no reply stream while open');
      await other.close();
      if ((await raw.command('EXISTS', other.replyTo)) !== 0) throw new Error('reply stream left after close');
    } finally {
      raw.close();
    }
  },
};

// Only when CONFORMANCE_ONLY names them: they need a set-up the default run does not make.
const namedOnly = {
  // No worker; the stream holds XLEN entries and max_backlog is XLEN + room, room > SCRIPT_CHUNK (so the refusal
  // falls in the second script call). room + 3 requests at once: the first room added, the last 3 BUSY and not
  // written; then one more BUSY. Read as the client's user (the producer ACL allows HGET of the limits, XLEN).
  async busy_refuses_the_tail(c) {
    const raw = await RedisConnection.connect({ host, port, ...user });
    try {
      const before = await raw.command('XLEN', stream);
      const room = Number(new TextDecoder().decode(await raw.command('HGET', `${stream}:limits`, 'max_backlog'))) - before;
      if (!(room > SCRIPT_CHUNK)) throw new Error(`set-up: room ${room} under the limit, want more than ${SCRIPT_CHUNK}`);
      const reqs = Array.from({ length: room + 3 }, (_, i) => ({ model: 'affine', inputs: [x(1, 3, i)] }));
      const results = await c.submitMany(reqs, { timeoutMs: 200 }); // nobody serves them
      results.forEach((res, i) => {
        const want = i < room ? Timeout : Busy;
        if (res.ok || !(res.error instanceof want)) throw new Error(`request ${i} (room ${room}): ${res.error ?? 'OK'}, want ${want.name}`);
      });
      await expectError(c.submit({ model: 'affine', inputs: [x(1)] }), Busy);
      const after = await raw.command('XLEN', stream);
      if (after !== before + room) throw new Error(`XLEN ${after}, want ${before + room}: refused requests were added`);
    } finally {
      raw.close();
    }
  },
};

const only = process.env.CONFORMANCE_ONLY?.split(',');
const client = await InferClient.connect({ host, port, ...user, stream, timeoutMs: 20000 });
let failed = 0;
for (const [name, run] of [...Object.entries(scenarios), ...Object.entries(namedOnly)]) {
  if ((only || name in namedOnly) && !only?.includes(name)) continue;
  try {
    await run(client);
    console.log(JSON.stringify({ name, ok: true }));
  } catch (err) {
    failed++;
    console.log(JSON.stringify({ name, ok: false, detail: String(err?.stack ?? err) }));
  }
}
await client.close();
process.exit(failed ? 1 : 0);
