// Backpressure (docs/protocol.md §2.1): the workers' max_backlog read apart with HGET, and the protocol's backlog
// script, which adds a chunk of a send round while the request stream's XLEN stays under it.
import { createHash } from 'node:crypto';
import { RedisError } from './resp.js';

const TEXT = new TextDecoder();

// The protocol's backlog script, byte for byte (every client sends this text: one script-cache entry for all).
// KEYS[1] the request stream; ARGV[1] max_backlog; ARGV[2] the entry count n; then per entry k and its k
// field/value arguments. Returns {XLEN after, {ids added}}: the entries past the last id were refused (BUSY).
// It touches only KEYS[1] (the limit comes in ARGV, not as a declared key), so the shipped producer ACL allows it.
export const BACKLOG_SCRIPT = `
local max = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
local ids = {}
local i = 3
for e = 1, n do
  if max > 0 and len >= max then break end
  local k = tonumber(ARGV[i])
  ids[e] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + k))
  len = len + 1
  i = i + k + 1
end
return {len, ids}
`;
export const BACKLOG_SCRIPT_SHA = createHash('sha1').update(BACKLOG_SCRIPT).digest('hex');
/** The most requests one script call adds: a send round under a limit pipelines one call per chunk. */
export const SCRIPT_CHUNK = 128;
/** How long the limit read is trusted (the Python and Go clients' 5 s). */
export const LIMIT_REFRESH_MS = 5000;

/** max_backlog from `HGET <stream>:limits max_backlog`: nil, garbage or <= 0 mean no limit (0). */
export function parseLimit(raw) {
  const text = raw == null ? '' : TEXT.decode(raw).trim();
  if (!/^[+-]?\d+$/.test(text)) return 0;
  return Math.max(0, Number(text));
}

/** The workers' max_backlog of one request stream, re-read once older than LIMIT_REFRESH_MS. */
export class Limit {
  constructor(key, refreshMs = LIMIT_REFRESH_MS) {
    this.key = key;
    this.refreshMs = refreshMs;
    this.value = 0;
    this.fetchedAt = -Infinity;
    this.reading = null;
  }

  /** @param {{command: Function}} conn */
  async get(conn) {
    if (performance.now() - this.fetchedAt < this.refreshMs) return this.value;
    this.reading ??= conn.command('HGET', this.key, 'max_backlog').then((raw) => {
      this.value = parseLimit(raw);
      this.fetchedAt = performance.now();
      return this.value;
    }).finally(() => { this.reading = null; });
    return this.reading;
  }
}

/**
 * The commands that add a send round's entries, in order: one XADD each with no limit, else one EVALSHA of the
 * backlog script per chunk of up to SCRIPT_CHUNK. Each call: {args, members} (indexes into `entries`).
 * @param {string} stream
 * @param {(string|Uint8Array)[][]} entries  each entry's field/value arguments
 * @param {number} maxBacklog
 */
export function addCalls(stream, entries, maxBacklog) {
  if (maxBacklog <= 0) return entries.map((fields, i) => ({ args: ['XADD', stream, '*', ...fields], members: [i] }));
  const calls = [];
  for (let start = 0; start < entries.length; start += SCRIPT_CHUNK) {
    const members = [];
    const args = ['EVALSHA', BACKLOG_SCRIPT_SHA, '1', stream, String(maxBacklog), ''];
    for (let i = start; i < Math.min(start + SCRIPT_CHUNK, entries.length); i++) {
      members.push(i);
      args.push(String(entries[i].length), ...entries[i]);
    }
    args[5] = String(members.length);
    calls.push({ args, members });
  }
  return calls;
}

/** The call again with EVAL and the script's text, for an EVALSHA answered NOSCRIPT. */
export function evalArgs(call) {
  return ['EVAL', BACKLOG_SCRIPT, ...call.args.slice(2)];
}

export function isNoScript(answer) {
  return answer instanceof RedisError && answer.message.startsWith('NOSCRIPT');
}

/**
 * How many of a call's members were added (the rest were refused: BUSY) and the backlog it reported; throws
 * the error that leaves all of them unsent (an error reply, or an answer not shaped as the script's).
 */
export function addedBy(call, answer) {
  if (answer instanceof Error) throw answer;
  if (call.args[0] === 'XADD') return { added: 1, backlog: 0 };
  if (Array.isArray(answer) && answer.length === 2 && typeof answer[0] === 'number' && Array.isArray(answer[1])
      && answer[1].length <= call.members.length) {
    return { added: answer[1].length, backlog: answer[0] };
  }
  throw new RedisError(`unexpected answer of the backlog script: ${String(answer)}`);
}
