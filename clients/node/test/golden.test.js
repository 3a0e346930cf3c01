// Every golden vector of docs/golden/: encoding the JSON meaning gives the body bytes exactly, and decoding
// the bytes gives the JSON meaning back (tensor elements against `values`, data against `data_hex`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { join, dirname } from 'node:path';
import { encode, decode, Float64, flatValues, nest } from '../src/index.js';

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'docs', 'golden');

const BIG = '\u0000big:';
const FLOAT = '\u0000float:';

// JSON.parse loses what the wire keeps: integers beyond 2^53 and "1.0" versus "1". Mark both in the text first
// (only number tokens, which never sit inside the vectors' strings: those are names and hex).
function parseExact(text) {
  const marked = text.replace(/(?<=[:\[,]\s*)(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?=\s*[,\]}])/g, (tok) => {
    if (/[.eE]/.test(tok)) return JSON.stringify(FLOAT + tok);
    if (!Number.isSafeInteger(Number(tok))) return JSON.stringify(BIG + tok);
    return tok;
  });
  return JSON.parse(marked, (_key, v) => {
    if (typeof v === 'string' && v.startsWith(BIG)) return BigInt(v.slice(BIG.length));
    if (typeof v === 'string' && v.startsWith(FLOAT)) return new Float64(Number(v.slice(FLOAT.length)));
    return v;
  });
}

const hex = (b) => Buffer.from(b).toString('hex');
const fromHex = (h) => new Uint8Array(Buffer.from(h, 'hex'));

// The wire map of the JSON meaning: tensors become {name, datatype, shape, data}, the rest as is.
function wireBody(body) {
  const out = {};
  for (const [k, v] of Object.entries(body)) {
    if ((k === 'inputs' || k === 'outputs') && Array.isArray(v) && v.length && typeof v[0] === 'object') {
      out[k] = v.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: fromHex(t.data_hex) }));
    } else {
      out[k] = v;
    }
  }
  return out;
}

// Comparable form of a decoded or expected value: Float64 → 'f:<number>', BigInt → 'i:<digits>', bytes → hex.
function plain(v) {
  if (v instanceof Float64) return `f:${v.value}`;
  if (typeof v === 'bigint' || typeof v === 'number') return `i:${v}`;
  if (v instanceof Uint8Array) return `b:${hex(v)}`;
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

// Tensor element values compare as numbers (the JSON writes FP values as floats, ints as ints).
function element(v, datatype) {
  if (datatype === 'BYTES') return v instanceof Uint8Array ? hex(v) : v;
  if (v instanceof Float64) return v.value;
  if (typeof v === 'bigint' && datatype !== 'INT64' && datatype !== 'UINT64') return Number(v);
  if (datatype === 'INT64' || datatype === 'UINT64') return BigInt(v);
  return v;
}

function mapDeep(v, f) {
  return Array.isArray(v) ? v.map((x) => mapDeep(x, f)) : f(v);
}

const cases = readdirSync(GOLDEN).filter((f) => f.endsWith('.json')).sort();

test('there are golden vectors to check', () => {
  assert.ok(cases.length >= 7, `only ${cases.length} vectors in ${GOLDEN}`);
});

for (const file of cases) {
  const meta = parseExact(readFileSync(join(GOLDEN, file), 'utf8'));
  const bytes = new Uint8Array(readFileSync(join(GOLDEN, meta.body_file)));

  test(`${meta.name}: the body file is the one described`, () => {
    assert.equal(bytes.length, Number(meta.body_size));
    assert.equal(createHash('sha256').update(bytes).digest('hex'), meta.body_sha256);
  });

  test(`${meta.name}: encodes byte for byte`, () => {
    assert.equal(hex(encode(wireBody(meta.body))), hex(bytes));
  });

  test(`${meta.name}: decodes to the documented meaning`, () => {
    const got = decode(bytes);
    assert.deepEqual(Object.keys(got), Object.keys(meta.body), 'keys in wire order');
    assert.deepEqual(plain(got), plain(wireBody(meta.body)));
    for (const key of ['inputs', 'outputs']) {
      const want = meta.body[key];
      if (!Array.isArray(want) || !want.length || typeof want[0] !== 'object') continue;
      got[key].forEach((t, i) => {
        const shape = t.shape.map(Number);
        const values = nest(flatValues(t.datatype, shape, t.data), shape);
        const dt = t.datatype;
        assert.deepEqual(mapDeep(values, (x) => element(x, dt)), mapDeep(want[i].values, (x) => element(x, dt)));
      });
    }
  });
}
