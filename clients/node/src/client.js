// InferClient: submits requests to the request stream and matches replies from its own reply stream.
import { randomBytes } from 'node:crypto';
import { RedisConnection, RedisError } from './resp.js';
import { encode, decode, Float64 } from './msgpack.js';
import { flatValues, nest, packValues } from './tensor.js';
import { errorFor, Busy, Timeout } from './errors.js';

const TIMING_KEYS = ['enqueued_ns', 'read_ns', 'batched_ns', 'compute_start_ns', 'compute_end_ns', 'published_ns'];
const TEXT = new TextDecoder();

// Checks the backlog against the workers' max_backlog and adds the request atomically (docs/protocol.md §2.1).
const SUBMIT_SCRIPT = `
local max = tonumber(redis.call('HGET', KEYS[2], 'max_backlog') or '0') or 0
if max > 0 and redis.call('XLEN', KEYS[1]) >= max then return false end
return redis.call('XADD', KEYS[1], '*', 'v', ARGV[4], 'id', ARGV[1], 'reply_to', ARGV[2], 'body', ARGV[3])`;

function unwrap(v) {
  if (v instanceof Float64) return v.value;
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === 'object' && !(v instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)]));
  }
  return v;
}

function wireTensor(t) {
  const data = t.data instanceof Uint8Array ? t.data : packValues(t.datatype, t.data);
  return { name: t.name, datatype: t.datatype, shape: t.shape, data };
}

function readTensor(t) {
  const shape = t.shape.map(Number);
  return {
    name: t.name, datatype: t.datatype, shape, data: t.data,
    get values() { return nest(flatValues(t.datatype, shape, t.data), shape); },
  };
}

function entryFields(raw) {
  const out = {};
  for (let i = 0; i + 1 < raw.length; i += 2) out[TEXT.decode(raw[i])] = raw[i + 1];
  return out;
}

export class InferClient {
  constructor(conn, reader, options) {
    this.conn = conn;
    this.reader = reader;
    this.stream = options.stream ?? 'infer:requests';
    this.limitsKey = `${this.stream}:limits`;
    this.replyTo = `${options.replyPrefix ?? 'infer:reply:'}${randomBytes(16).toString('hex')}`;
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.pending = new Map();
    this.answered = new Set();
    this.lastId = '0-0';
    this.closed = false;
    this.sha = null;
    this.loop = this.readLoop();
  }

  /**
   * @param {{host?: string, port?: number, password?: string, username?: string, stream?: string,
   *          replyPrefix?: string, timeoutMs?: number}} [options]
   */
  static async connect(options = {}) {
    const conn = await RedisConnection.connect(options);
    const reader = await RedisConnection.connect(options);
    return new InferClient(conn, reader, options);
  }

  async readLoop() {
    while (!this.closed) {
      let res;
      try {
        res = await this.reader.command('XREAD', 'COUNT', '512', 'BLOCK', '1000', 'STREAMS', this.replyTo, this.lastId);
      } catch (err) {
        if (this.closed) return;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        return;
      }
      if (!res) continue;
      for (const [, entries] of res) {
        for (const [entryId, raw] of entries) {
          this.lastId = TEXT.decode(entryId);
          this.onReply(entryFields(raw));
        }
      }
    }
  }

  onReply(fields) {
    if (!fields.v || TEXT.decode(fields.v) !== '1' || !fields.id || !fields.body) return;
    const id = TEXT.decode(fields.id);
    const p = this.pending.get(id);
    if (!p) return; // a duplicate, or a reply after its timeout: dropped by id
    this.pending.delete(id);
    this.remember(id);
    clearTimeout(p.timer);
    let body;
    try {
      body = decode(fields.body);
    } catch (err) {
      p.reject(errorFor('MALFORMED', `undecodable reply: ${err.message}`));
      return;
    }
    p.resolve(this.toReply(id, body));
  }

  remember(id) {
    this.answered.add(id);
    if (this.answered.size > 100000) this.answered.delete(this.answered.values().next().value);
  }

  toReply(id, body) {
    const timing = {};
    for (const k of TIMING_KEYS) timing[k] = BigInt(body.timing?.[k] ?? 0); // always BigInt: subtractable
    return {
      id, status: body.status, error: body.error, model: body.model, worker: body.worker,
      batchSize: Number(body.batch_size ?? 0), timing, outputs: (body.outputs ?? []).map(readTensor),
    };
  }

  encodeRequest(req) {
    const body = { model: req.model, inputs: req.inputs.map(wireTensor) };
    if (req.modelVersion !== undefined) body.model_version = req.modelVersion;
    if (req.timeoutMs !== undefined) body.timeout_ms = req.timeoutMs;
    if (req.priority) body.priority = req.priority;
    if (req.outputs !== undefined) body.outputs = req.outputs;
    if (req.parameters && Object.keys(req.parameters).length) body.parameters = req.parameters;
    return encode(body);
  }

  async evalSubmit(id, body, v) {
    const args = ['2', this.stream, this.limitsKey, id, this.replyTo, body, v];
    if (this.sha) {
      try {
        return await this.conn.command('EVALSHA', this.sha, ...args);
      } catch (err) {
        if (!(err instanceof RedisError) || !err.message.startsWith('NOSCRIPT')) throw err;
      }
    }
    this.sha = TEXT.decode(await this.conn.command('SCRIPT', 'LOAD', SUBMIT_SCRIPT));
    return this.conn.command('EVALSHA', this.sha, ...args);
  }

  /**
   * Adds one request; the promise resolves with the reply (status OK) or rejects with the typed error.
   * @param {object} request  {model, inputs: [{name, datatype, shape, data}], modelVersion?, timeoutMs?,
   *   priority?, outputs?, parameters?, id?}
   * @param {{timeoutMs?: number}} [options]  the client's own wait (default: request.timeoutMs + 1 s, or
   *   the client's timeoutMs)
   */
  async submit(request, options = {}) {
    const id = request.id ?? randomBytes(12).toString('hex');
    const waitMs = options.timeoutMs ?? (request.timeoutMs !== undefined ? request.timeoutMs + 1000 : this.timeoutMs);
    return this.submitEncoded(id, this.encodeRequest(request), { timeoutMs: waitMs });
  }

  /**
   * Adds an already encoded body (and a chosen `v`, default '1') under `id` and waits for its reply, like
   * submit(). For tools and conformance tests that must send what submit() would refuse to build.
   * @param {string} id
   * @param {Uint8Array} body
   * @param {{timeoutMs?: number, v?: string}} [options]
   */
  async submitEncoded(id, body, options = {}) {
    if (this.closed) throw new Error('client is closed');
    const waitMs = options.timeoutMs ?? this.timeoutMs;
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Timeout('TIMEOUT', `no reply to ${id} within ${waitMs} ms`));
      }, waitMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    reply.catch(() => {}); // settled below; keeps an early timeout from being an unhandled rejection
    let added;
    try {
      added = await this.evalSubmit(id, body, options.v ?? '1');
    } catch (err) {
      this.forget(id);
      throw err;
    }
    if (added === null) {
      this.forget(id);
      throw new Busy('BUSY', `backlog of ${this.stream} is at max_backlog`);
    }
    const r = await reply;
    if (r.status !== 'OK') throw errorFor(r.status, r.error ?? '', r);
    return r;
  }

  forget(id) {
    const p = this.pending.get(id);
    if (p) clearTimeout(p.timer);
    this.pending.delete(id);
  }

  /** submit() and return the outputs by name, with decoded values. */
  async infer(request, options = {}) {
    const reply = await this.submit(request, options);
    return Object.fromEntries(reply.outputs.map((t) => [t.name, t]));
  }

  /**
   * Adds many requests in one pipeline; resolves to one result per request, in order:
   * {ok: true, reply} or {ok: false, error}.
   */
  async submitMany(requests, options = {}) {
    const settled = await Promise.allSettled(requests.map((r) => this.submit(r, options)));
    return settled.map((s) => (s.status === 'fulfilled' ? { ok: true, reply: s.value } : { ok: false, error: s.reason }));
  }

  /** Stops reading, fails what is still pending, deletes the reply stream and closes the connections. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    this.reader.close();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Timeout('TIMEOUT', `client closed before the reply to ${id}`));
    }
    this.pending.clear();
    try {
      await this.conn.command('DEL', this.replyTo);
    } finally {
      this.conn.close();
    }
  }
}
