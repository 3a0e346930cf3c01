// The JavaScript traps of issue 12 point 8, and the decoder's handling of bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode, Float64, MsgpackError, flatValues, packValues } from '../src/index.js';

const hex = (b) => Buffer.from(b).toString('hex');

test('a Number >= 2^32 stays an int (uint64), never a float', () => {
  assert.equal(hex(encode(2 ** 32)), 'cf0000000100000000');
  assert.equal(decode(encode(2 ** 32)), 2 ** 32);
});

test('an integral float stays a float only through Float64', () => {
  assert.equal(hex(encode(3)), '03');
  assert.equal(hex(encode(new Float64(3))), 'cb4008000000000000');
  assert.ok(decode(encode(new Float64(3))) instanceof Float64);
});

test('integers beyond 2^53 need BigInt and round-trip as BigInt; small ones decode as Number', () => {
  assert.throws(() => encode(2 ** 60), MsgpackError);
  assert.equal(decode(encode(2n ** 60n)), 2n ** 60n);
  assert.equal(decode(encode(-(2n ** 63n))), -(2n ** 63n));
  assert.equal(decode(encode(0n)), 0);
  assert.equal(hex(encode(0n)), '00');
});

test('every integer width is the smallest one', () => {
  const cases = [[127, '7f'], [128, 'cc80'], [256, 'cd0100'], [65536, 'ce00010000'], [-1, 'ff'], [-32, 'e0'],
    [-33, 'd0df'], [-129, 'd1ff7f'], [-32769, 'd2ffff7fff']];
  for (const [n, want] of cases) {
    assert.equal(hex(encode(n)), want, `${n}`);
    assert.equal(decode(encode(n)), n);
  }
});

test('bad input fails with MsgpackError, never something else', () => {
  for (const bad of ['a1', 'c1', '92', 'a2ff', 'c4', '0102', 'a2c328']) {
    assert.throws(() => decode(new Uint8Array(Buffer.from(bad, 'hex'))), MsgpackError, bad);
  }
  assert.throws(() => decode(encode({ a: 1 }).fill(0x07, 1, 2)), MsgpackError);
});

test('tensor data packs and unpacks little-endian', () => {
  assert.equal(hex(packValues('INT16', [1, -2])), '0100feff');
  assert.deepEqual(flatValues('INT16', [2], packValues('INT16', [1, -2])), [1, -2]);
  assert.deepEqual(flatValues('INT64', [1], packValues('INT64', [-5n])), [-5n]);
  assert.equal(hex(packValues('BYTES', ['ab', new Uint8Array()])), '020000006162' + '00000000');
});
