// The backlog script and the send round without Redis: the script is the protocol's text (docs/protocol.md §2.1)
// byte for byte, calls are chunked, the refused tail of a call is BUSY. The same paths against a real worker
// and the shipped producer ACL: conformance/run.js, run by tests/test_conformance_node.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, dirname } from 'node:path';
import { BACKLOG_SCRIPT, BACKLOG_SCRIPT_SHA, SCRIPT_CHUNK, Limit, addCalls, addedBy, evalArgs, isNoScript, parseLimit }
  from '../src/backlog.js';
import { RedisError } from '../src/resp.js';

const PROTOCOL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'docs', 'protocol.md');
const FENCE = '```lua\n';

test('the backlog script is the protocol block, byte for byte, and the docs name its SHA1', () => {
  const doc = readFileSync(PROTOCOL, 'utf8');
  assert.equal(doc.split(FENCE).length, 2, 'docs/protocol.md must hold exactly one lua block');
  const start = doc.indexOf(FENCE) + FENCE.length;
  assert.equal(BACKLOG_SCRIPT, doc.slice(start, doc.indexOf('```', start)));
  assert.ok(doc.includes(`\`${BACKLOG_SCRIPT_SHA}\``), `docs/protocol.md does not name ${BACKLOG_SCRIPT_SHA}`);
});

const entries = (n) => Array.from({ length: n }, (_, i) => ['v', '1', 'id', `r${i}`, 'reply_to', 'infer:reply:c', 'body', new Uint8Array([0x80])]);

test('no limit: one XADD per request; under a limit: one script call per chunk, never the limits key', () => {
  const plain = addCalls('infer:requests', entries(3), 0);
  assert.deepEqual(plain.map((c) => c.args.slice(0, 5)), [0, 1, 2].map((i) => ['XADD', 'infer:requests', '*', 'v', '1']));
  assert.deepEqual(plain[2].members, [2]);
  const calls = addCalls('infer:requests', entries(2 * SCRIPT_CHUNK + 1), 7);
  assert.deepEqual(calls.map((c) => c.members.length), [SCRIPT_CHUNK, SCRIPT_CHUNK, 1]);
  assert.equal(calls[1].members[0], SCRIPT_CHUNK);
  assert.deepEqual(calls[0].args.slice(0, 6), ['EVALSHA', BACKLOG_SCRIPT_SHA, '1', 'infer:requests', '7', String(SCRIPT_CHUNK)]);
  assert.equal(calls[0].args.length, 6 + 9 * SCRIPT_CHUNK);
  assert.deepEqual(calls[2].args.slice(5, 11), ['1', '8', 'v', '1', 'id', `r${2 * SCRIPT_CHUNK}`]);
  assert.ok(!calls[0].args.includes('infer:requests:limits'));
  assert.deepEqual(evalArgs(calls[2]).slice(0, 4), ['EVAL', BACKLOG_SCRIPT, '1', 'infer:requests']);
});

test('the script answer says how many were added; an error or a strange answer fails the whole call', () => {
  const [call] = addCalls('s', entries(5), 9);
  assert.deepEqual(addedBy(call, [9, [new Uint8Array(1), new Uint8Array(1)]]), { added: 2, backlog: 9 });
  assert.deepEqual(addedBy(call, [9, []]), { added: 0, backlog: 9 });
  assert.throws(() => addedBy(call, new RedisError('NOPERM no permissions')), /NOPERM/);
  for (const odd of [null, 3, [1], [1, Array(6).fill(new Uint8Array(1))]]) assert.throws(() => addedBy(call, odd), RedisError);
  assert.deepEqual(addedBy(addCalls('s', entries(1), 0)[0], new Uint8Array(3)), { added: 1, backlog: 0 });
  assert.ok(isNoScript(new RedisError('NOSCRIPT No matching script')) && !isNoScript(new RedisError('ERR')));
});

test('the limit: garbage and nil read as none, cached until the refresh is due', async () => {
  const bytes = (s) => new TextEncoder().encode(s);
  assert.deepEqual([null, '', 'x', '12abc', '-3', '0', '40'].map((s) => parseLimit(s === null ? null : bytes(s))), [0, 0, 0, 0, 0, 0, 40]);
  let reads = 0;
  const conn = { command: async () => { reads += 1; return bytes(String(reads * 10)); } };
  const limit = new Limit('s:limits', 60000);
  assert.deepEqual(await Promise.all([limit.get(conn), limit.get(conn)]), [10, 10]);
  assert.equal(await limit.get(conn), 10);
  limit.refreshMs = 0;
  assert.equal(await limit.get(conn), 20);
  assert.equal(reads, 2);
});
