// A small msgpack encoder/decoder that keeps what the protocol needs and JavaScript loses:
// the int/float distinction (Float64 wraps an integral float), 64-bit integers (BigInt),
// str versus bin (Uint8Array). It follows the reference encoder's conventions (docs/protocol.md §12):
// the smallest integer and length formats, floats as float64, map keys in insertion order.

/** A float that must stay a float on the wire even when its value is integral (1.0). */
export class Float64 {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
}

export class MsgpackError extends Error {}

const TEXT_ENCODER = new TextEncoder();
const TEXT_DECODER = new TextDecoder('utf-8', { fatal: true });

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(b) {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  head(tag, len, width) {
    this.ensure(1 + width);
    this.buf[this.pos++] = tag;
    if (width === 1) this.view.setUint8(this.pos, len);
    else if (width === 2) this.view.setUint16(this.pos, len);
    else this.view.setUint32(this.pos, len);
    this.pos += width;
  }

  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

function writeInt(w, n) {
  // n is a Number (safe integer) or a BigInt; the smallest format that holds it, as msgpack-python writes.
  const big = typeof n === 'bigint';
  const v = big ? n : BigInt(n);
  if (v >= 0n) {
    if (v < 128n) return w.u8(Number(v));
    if (v < 256n) return w.head(0xcc, Number(v), 1);
    if (v < 65536n) return w.head(0xcd, Number(v), 2);
    if (v < 4294967296n) return w.head(0xce, Number(v), 4);
    if (v > 18446744073709551615n) throw new MsgpackError(`integer ${v} does not fit in 64 bits`);
    w.ensure(9);
    w.buf[w.pos++] = 0xcf;
    w.view.setBigUint64(w.pos, v);
    w.pos += 8;
    return undefined;
  }
  if (v >= -32n) return w.u8(0x100 + Number(v));
  if (v >= -128n) {
    w.ensure(2);
    w.buf[w.pos++] = 0xd0;
    w.view.setInt8(w.pos++, Number(v));
    return undefined;
  }
  if (v >= -32768n) {
    w.ensure(3);
    w.buf[w.pos++] = 0xd1;
    w.view.setInt16(w.pos, Number(v));
    w.pos += 2;
    return undefined;
  }
  if (v >= -2147483648n) {
    w.ensure(5);
    w.buf[w.pos++] = 0xd2;
    w.view.setInt32(w.pos, Number(v));
    w.pos += 4;
    return undefined;
  }
  if (v < -9223372036854775808n) throw new MsgpackError(`integer ${v} does not fit in 64 bits`);
  w.ensure(9);
  w.buf[w.pos++] = 0xd3;
  w.view.setBigInt64(w.pos, v);
  w.pos += 8;
  return undefined;
}

function writeFloat(w, x) {
  w.ensure(9);
  w.buf[w.pos++] = 0xcb;
  w.view.setFloat64(w.pos, x);
  w.pos += 8;
}

function writeStr(w, s) {
  const b = TEXT_ENCODER.encode(s);
  if (b.length < 32) w.u8(0xa0 | b.length);
  else if (b.length < 256) w.head(0xd9, b.length, 1);
  else if (b.length < 65536) w.head(0xda, b.length, 2);
  else w.head(0xdb, b.length, 4);
  w.bytes(b);
}

function writeLen(w, len, fix, fixMax, t16, t32) {
  if (len < fixMax) w.u8(fix | len);
  else if (len < 65536) w.head(t16, len, 2);
  else w.head(t32, len, 4);
}

function write(w, value) {
  if (value === null || value === undefined) return w.u8(0xc0);
  if (value === true) return w.u8(0xc3);
  if (value === false) return w.u8(0xc2);
  if (typeof value === 'bigint') return writeInt(w, value);
  if (typeof value === 'number') {
    // An integral Number within the safe range is an int; anything else is a float64.
    // Numbers >= 2^32 stay ints (the trap of docs/golden/README.md's old advice).
    if (Number.isSafeInteger(value)) return writeInt(w, value);
    if (Number.isInteger(value)) throw new MsgpackError(`integer ${value} is beyond 2^53: pass it as a BigInt`);
    return writeFloat(w, value);
  }
  if (value instanceof Float64) return writeFloat(w, value.value);
  if (typeof value === 'string') return writeStr(w, value);
  if (value instanceof Uint8Array) {
    if (value.length < 256) w.head(0xc4, value.length, 1);
    else if (value.length < 65536) w.head(0xc5, value.length, 2);
    else w.head(0xc6, value.length, 4);
    return w.bytes(value);
  }
  if (Array.isArray(value)) {
    writeLen(w, value.length, 0x90, 16, 0xdc, 0xdd);
    for (const item of value) write(w, item);
    return undefined;
  }
  if (value instanceof Map) {
    writeLen(w, value.size, 0x80, 16, 0xde, 0xdf);
    for (const [k, v] of value) {
      write(w, k);
      write(w, v);
    }
    return undefined;
  }
  if (typeof value === 'object') {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined);
    writeLen(w, keys.length, 0x80, 16, 0xde, 0xdf);
    for (const k of keys) {
      writeStr(w, k);
      write(w, value[k]);
    }
    return undefined;
  }
  throw new MsgpackError(`cannot encode a ${typeof value}`);
}

/**
 * Encodes a value as msgpack. Safe-integer Numbers and BigInts are ints, other Numbers and Float64 are
 * float64, strings are str, Uint8Array is bin, plain objects and Maps are maps (keys in insertion order;
 * undefined values left out), null is nil.
 * @param {unknown} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  const w = new Writer();
  write(w, value);
  return w.buf.slice(0, w.pos);
}

class Reader {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.buf.length) throw new MsgpackError('truncated msgpack data');
  }
}

function int64(r, signed) {
  r.need(8);
  const v = signed ? r.view.getBigInt64(r.pos) : r.view.getBigUint64(r.pos);
  r.pos += 8;
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

function fixed(r, n, get) {
  r.need(n);
  const v = get.call(r.view, r.pos);
  r.pos += n;
  return v;
}

function raw(r, len) {
  r.need(len);
  const out = r.buf.subarray(r.pos, r.pos + len);
  r.pos += len;
  return out;
}

function str(r, len) {
  try {
    return TEXT_DECODER.decode(raw(r, len));
  } catch (err) {
    if (err instanceof MsgpackError) throw err;
    throw new MsgpackError('msgpack str is not valid UTF-8');
  }
}

function array(r, len, depth) {
  const out = new Array(len);
  for (let i = 0; i < len; i++) out[i] = read(r, depth + 1);
  return out;
}

function map(r, len, depth) {
  const out = Object.create(null);
  for (let i = 0; i < len; i++) {
    const key = read(r, depth + 1);
    if (typeof key !== 'string') throw new MsgpackError('map key is not a string');
    out[key] = read(r, depth + 1);
  }
  return out;
}

const V = DataView.prototype;

// eslint-disable-next-line complexity
function read(r, depth) {
  if (depth > 64) throw new MsgpackError('msgpack nesting too deep');
  const t = fixed(r, 1, V.getUint8);
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  if (t <= 0x8f) return map(r, t & 0x0f, depth);
  if (t <= 0x9f) return array(r, t & 0x0f, depth);
  if (t <= 0xbf) return str(r, t & 0x1f);
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return raw(r, fixed(r, 1, V.getUint8));
    case 0xc5: return raw(r, fixed(r, 2, V.getUint16));
    case 0xc6: return raw(r, fixed(r, 4, V.getUint32));
    case 0xca: return new Float64(fixed(r, 4, V.getFloat32));
    case 0xcb: return new Float64(fixed(r, 8, V.getFloat64));
    case 0xcc: return fixed(r, 1, V.getUint8);
    case 0xcd: return fixed(r, 2, V.getUint16);
    case 0xce: return fixed(r, 4, V.getUint32);
    case 0xcf: return int64(r, false);
    case 0xd0: return fixed(r, 1, V.getInt8);
    case 0xd1: return fixed(r, 2, V.getInt16);
    case 0xd2: return fixed(r, 4, V.getInt32);
    case 0xd3: return int64(r, true);
    case 0xd9: return str(r, fixed(r, 1, V.getUint8));
    case 0xda: return str(r, fixed(r, 2, V.getUint16));
    case 0xdb: return str(r, fixed(r, 4, V.getUint32));
    case 0xdc: return array(r, fixed(r, 2, V.getUint16), depth);
    case 0xdd: return array(r, fixed(r, 4, V.getUint32), depth);
    case 0xde: return map(r, fixed(r, 2, V.getUint16), depth);
    case 0xdf: return map(r, fixed(r, 4, V.getUint32), depth);
    default: throw new MsgpackError(`unsupported msgpack type 0x${t.toString(16)}`);
  }
}

/**
 * Decodes one msgpack value. Ints are Numbers when they are safe integers, BigInts otherwise; floats are
 * Float64 (so the int/float distinction survives; `.value` is the Number); str is string, bin is Uint8Array
 * (a view on `bytes`); maps are null-prototype objects with string keys.
 * @param {Uint8Array} bytes
 * @returns {unknown}
 */
export function decode(bytes) {
  const r = new Reader(bytes);
  const value = read(r, 0);
  if (r.pos !== bytes.length) throw new MsgpackError('trailing bytes after the msgpack value');
  return value;
}
