// A minimal RESP2 client over net.Socket: commands are pipelined (each write gets the next reply in order).
import net from 'node:net';

export class RedisError extends Error {}

const CRLF = Buffer.from('\r\n');

function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

// Parses one reply at `pos`; returns [value, nextPos] or undefined when the buffer holds less than one reply.
function parse(buf, pos) {
  if (pos >= buf.length) return undefined;
  const eol = buf.indexOf(CRLF, pos);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  if (type === '+') return [line, next];
  if (type === '-') return [new RedisError(line), next];
  if (type === ':') return [Number(line), next];
  if (type === '$') {
    const len = Number(line);
    if (len < 0) return [null, next];
    if (buf.length < next + len + 2) return undefined;
    return [new Uint8Array(buf.subarray(next, next + len)), next + len + 2];
  }
  if (type === '*') {
    const n = Number(line);
    if (n < 0) return [null, next];
    const out = [];
    let p = next;
    for (let i = 0; i < n; i++) {
      const r = parse(buf, p);
      if (!r) return undefined;
      out.push(r[0]);
      p = r[1];
    }
    return [out, p];
  }
  throw new RedisError(`unexpected RESP type ${JSON.stringify(type)}`);
}

export class RedisConnection {
  /** @param {net.Socket} socket */
  constructor(socket) {
    this.socket = socket;
    this.pending = [];
    this.buf = Buffer.alloc(0);
    this.closed = false;
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('close', () => this.fail(new RedisError('connection closed')));
    socket.on('error', (err) => this.fail(err));
  }

  /**
   * @param {{host?: string, port?: number, password?: string, username?: string}} options
   * @returns {Promise<RedisConnection>}
   */
  static async connect({ host = '127.0.0.1', port = 6379, password, username } = {}) {
    const socket = net.createConnection({ host, port });
    socket.setNoDelay(true);
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const conn = new RedisConnection(socket);
    if (password !== undefined) await conn.command(...(username ? ['AUTH', username, password] : ['AUTH', password]));
    return conn;
  }

  onData(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      const r = parse(this.buf, pos);
      if (!r) break;
      pos = r[1];
      const waiter = this.pending.shift();
      if (!waiter) continue;
      if (r[0] instanceof RedisError) waiter.reject(r[0]);
      else waiter.resolve(r[0]);
    }
    this.buf = this.buf.subarray(pos);
  }

  fail(err) {
    this.closed = true;
    for (const w of this.pending.splice(0)) w.reject(err);
  }

  /**
   * Sends one command; the promise settles with its reply (bulk strings as Uint8Array, nil as null).
   * @param {...(string|Uint8Array)} args
   * @returns {Promise<any>}
   */
  command(...args) {
    if (this.closed) return Promise.reject(new RedisError('connection closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.socket.write(encodeCommand(args));
    });
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }
}
