// Tensor data: little-endian, row-major; BYTES elements are length-prefixed (docs/protocol.md §5).

export class TensorError extends Error {}

/** Element sizes and DataView readers of the fixed-size datatypes. */
const FIXED = {
  BOOL: [1, (v, o) => v.getUint8(o) !== 0],
  UINT8: [1, (v, o) => v.getUint8(o)],
  UINT16: [2, (v, o) => v.getUint16(o, true)],
  UINT32: [4, (v, o) => v.getUint32(o, true)],
  UINT64: [8, (v, o) => v.getBigUint64(o, true)],
  INT8: [1, (v, o) => v.getInt8(o)],
  INT16: [2, (v, o) => v.getInt16(o, true)],
  INT32: [4, (v, o) => v.getInt32(o, true)],
  INT64: [8, (v, o) => v.getBigInt64(o, true)],
  FP16: [2, (v, o) => halfToNumber(v.getUint16(o, true))],
  FP32: [4, (v, o) => v.getFloat32(o, true)],
  FP64: [8, (v, o) => v.getFloat64(o, true)],
};

export const DATATYPES = Object.freeze([...Object.keys(FIXED), 'BYTES']);

function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function count(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The flat elements of a tensor: Numbers, BigInt for INT64/UINT64, booleans for BOOL, Uint8Array for BYTES.
 * @param {string} datatype
 * @param {number[]} shape
 * @param {Uint8Array} data
 * @returns {unknown[]}
 */
export function flatValues(datatype, shape, data) {
  const n = count(shape);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (datatype === 'BYTES') return splitBytes(view, data, n);
  const spec = FIXED[datatype];
  if (!spec) throw new TensorError(`unknown datatype ${datatype}`);
  const [size, get] = spec;
  if (data.length !== n * size) throw new TensorError(`data is ${data.length} bytes, shape needs ${n * size}`);
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = get(view, i * size);
  return out;
}

function splitBytes(view, data, n) {
  const out = [];
  let pos = 0;
  for (let i = 0; i < n; i++) {
    if (pos + 4 > data.length) throw new TensorError('BYTES element length runs past the end');
    const len = view.getUint32(pos, true);
    pos += 4;
    if (pos + len > data.length) throw new TensorError('BYTES element runs past the end');
    out.push(data.subarray(pos, pos + len));
    pos += len;
  }
  if (pos !== data.length) throw new TensorError('BYTES data has trailing bytes');
  return out;
}

/**
 * Nests flat elements by shape: one level per dimension, a bare value for a 0-d tensor.
 * @param {unknown[]} flat
 * @param {number[]} shape
 * @returns {unknown}
 */
export function nest(flat, shape) {
  if (shape.length === 0) return flat[0];
  let pos = 0;
  const build = (dim) => {
    const out = [];
    for (let i = 0; i < shape[dim]; i++) out.push(dim === shape.length - 1 ? flat[pos++] : build(dim + 1));
    return out;
  };
  return build(0);
}

/**
 * Packs flat elements into tensor data (the inverse of flatValues).
 * @param {string} datatype
 * @param {unknown[]} flat
 * @returns {Uint8Array}
 */
export function packValues(datatype, flat) {
  if (datatype === 'BYTES') {
    const parts = flat.map((e) => (typeof e === 'string' ? new TextEncoder().encode(e) : e));
    const out = new Uint8Array(parts.reduce((a, p) => a + 4 + p.length, 0));
    const view = new DataView(out.buffer);
    let pos = 0;
    for (const p of parts) {
      view.setUint32(pos, p.length, true);
      out.set(p, pos + 4);
      pos += 4 + p.length;
    }
    return out;
  }
  const setters = {
    BOOL: (v, o, x) => v.setUint8(o, x ? 1 : 0), UINT8: (v, o, x) => v.setUint8(o, x),
    UINT16: (v, o, x) => v.setUint16(o, x, true), UINT32: (v, o, x) => v.setUint32(o, x, true),
    UINT64: (v, o, x) => v.setBigUint64(o, BigInt(x), true), INT8: (v, o, x) => v.setInt8(o, x),
    INT16: (v, o, x) => v.setInt16(o, x, true), INT32: (v, o, x) => v.setInt32(o, x, true),
    INT64: (v, o, x) => v.setBigInt64(o, BigInt(x), true), FP32: (v, o, x) => v.setFloat32(o, x, true),
    FP64: (v, o, x) => v.setFloat64(o, x, true),
  };
  const set = setters[datatype];
  if (!set) throw new TensorError(`cannot pack datatype ${datatype}`);
  const size = FIXED[datatype][0];
  const out = new Uint8Array(flat.length * size);
  const view = new DataView(out.buffer);
  flat.forEach((x, i) => set(view, i * size, x));
  return out;
}
