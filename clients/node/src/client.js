// InferClient: submits requests to the request stream and matches replies from its own reply stream.
import { randomBytes } from 'node:crypto';
import { RedisConnection } from './resp.js';
import { encode, decode, Float64 } from './msgpack.js';
import { flatValues, nest, packValues } from './tensor.js';
import { errorFor, Busy, Timeout } from './errors.js';
import { Limit, addCalls, addedBy, evalArgs, isNoScript } from './backlog.js';

const TIMING_KEYS = ['enqueued_ns', 'read_ns', 'batched_ns', 'compute_start_ns', 'compute_end_ns', 'published_ns'];
const TEXT = new TextDecoder();

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

/** The reply if its status is OK; else throws the status's typed error (holding the reply). */
function settled(reply) {
  if (reply.status !== 'OK') throw errorFor(reply.status, reply.error ?? '', reply);
  return reply;
}

export class InferClient {
  constructor(conn, reader, options) {
    this.conn = conn;
    this.reader = reader;
    this.stream = options.stream ?? 'infer:requests';
    this.limit = new Limit(`${this.stream}:limits`);
    this.replyTo = `${options.replyPrefix ?? 'infer:reply:'}${randomBytes(16).toString('hex')}`;
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.pending = new Map();
    this.answered = new Set();
    this.lastId = '0-0';
    this.closed = false;
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

  /**
   * Registers a waiter for each item ({id, body, v, waitMs}) and adds them all in one pipeline: one XADD each
   * while no max_backlog is published, else one backlog script call per chunk (docs/protocol.md §2.1).
   * Returns one promise per item: the reply (any status), or the rejection (Busy for a request the script
   * refused, the Redis error for a call that failed, Timeout). Throws only when nothing was sent.
   */
  async sendRound(items) {
    if (this.closed) throw new Error('client is closed');
    const replies = items.map((it) => this.register(it.id, it.waitMs));
    let maxBacklog;
    try {
      maxBacklog = await this.limit.get(this.conn);
    } catch (err) {
      for (const it of items) this.forget(it.id);
      throw err;
    }
    const entries = items.map((it) => ['v', it.v, 'id', it.id, 'reply_to', this.replyTo, 'body', it.body]);
    const calls = addCalls(this.stream, entries, maxBacklog);
    const answers = await Promise.all(calls.map((call) => this.conn.command(...call.args).catch((err) => err)));
    // EVALSHA answered NOSCRIPT (not in the script cache yet, or flushed): the same calls again, with the text
    const missing = calls.map((_, k) => k).filter((k) => isNoScript(answers[k]));
    const again = await Promise.all(missing.map((k) => this.conn.command(...evalArgs(calls[k])).catch((err) => err)));
    missing.forEach((k, j) => { answers[k] = again[j]; });
    calls.forEach((call, k) => this.settleCall(items, call, answers[k], maxBacklog));
    return replies;
  }

  register(id, waitMs) {
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Timeout('TIMEOUT', `no reply to ${id} within ${waitMs} ms`));
      }, waitMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    reply.catch(() => {}); // the caller may await it later: keeps an early rejection from being unhandled
    return reply;
  }

  settleCall(items, call, answer, maxBacklog) {
    let added = 0;
    let backlog = 0;
    let failure = null;
    try {
      ({ added, backlog } = addedBy(call, answer));
    } catch (err) {
      failure = err;
    }
    call.members.forEach((i, j) => {
      if (!failure && j < added) return;
      const err = failure ?? new Busy('BUSY', `the backlog of ${this.stream} holds ${backlog} entries, `
        + `the limit is ${maxBacklog}; nothing was added`);
      const p = this.pending.get(items[i].id);
      this.forget(items[i].id);
      p?.reject(err);
    });
  }

  /**
   * Adds one request; the promise resolves with the reply (status OK) or rejects with the typed error.
   * @param {object} request  {model, inputs: [{name, datatype, shape, data}], modelVersion?, timeoutMs?,
   *   priority?, outputs?, parameters?, id?}
   * @param {{timeoutMs?: number}} [options]  the client's own wait (default: request.timeoutMs + 1 s, or
   *   the client's timeoutMs)
   */
  async submit(request, options = {}) {
    const item = this.prepare(request, options);
    return this.submitEncoded(item.id, item.body, { timeoutMs: item.waitMs });
  }

  /** A request ready to send: {id, body, v, waitMs}. Throws what encoding refuses. */
  prepare(request, options = {}) {
    const id = request.id ?? randomBytes(12).toString('hex');
    const waitMs = options.timeoutMs ?? (request.timeoutMs !== undefined ? request.timeoutMs + 1000 : this.timeoutMs);
    return { id, body: this.encodeRequest(request), v: '1', waitMs };
  }

  /**
   * Adds an already encoded body (and a chosen `v`, default '1') under `id` and waits for its reply, like
   * submit(). For tools and conformance tests that must send what submit() would refuse to build.
   * @param {string} id
   * @param {Uint8Array} body
   * @param {{timeoutMs?: number, v?: string}} [options]
   */
  async submitEncoded(id, body, options = {}) {
    const waitMs = options.timeoutMs ?? this.timeoutMs;
    const [reply] = await this.sendRound([{ id, body, v: options.v ?? '1', waitMs }]);
    return settled(await reply);
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
   * Adds many requests in one pipeline (under a max_backlog, one backlog script call per 128 of them);
   * resolves to one result per request, in order: {ok: true, reply} or {ok: false, error} (Busy for each
   * request the backlog had no room for: nothing of it was added).
   */
  async submitMany(requests, options = {}) {
    const results = new Array(requests.length);
    const items = [];
    const where = [];
    requests.forEach((request, i) => {
      try {
        items.push(this.prepare(request, options));
        where.push(i);
      } catch (error) {
        results[i] = { ok: false, error };
      }
    });
    let replies;
    try {
      replies = await this.sendRound(items);
    } catch (error) {
      replies = items.map(() => Promise.reject(error));
    }
    const outcomes = await Promise.allSettled(replies.map(async (reply) => settled(await reply)));
    outcomes.forEach((s, k) => {
      results[where[k]] = s.status === 'fulfilled' ? { ok: true, reply: s.value } : { ok: false, error: s.reason };
    });
    return results;
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
