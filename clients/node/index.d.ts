export class Float64 { constructor(value: number); value: number; }
export class MsgpackError extends Error {}
export function encode(value: unknown): Uint8Array;
export function decode(bytes: Uint8Array): unknown;

export type Datatype = 'BOOL' | 'UINT8' | 'UINT16' | 'UINT32' | 'UINT64' | 'INT8' | 'INT16' | 'INT32' | 'INT64'
  | 'FP16' | 'FP32' | 'FP64' | 'BYTES';
export const DATATYPES: readonly Datatype[];
export class TensorError extends Error {}
export function flatValues(datatype: Datatype, shape: number[], data: Uint8Array): unknown[];
export function nest(flat: unknown[], shape: number[]): unknown;
export function packValues(datatype: Datatype, flat: unknown[]): Uint8Array;

export class RedisError extends Error {}
export interface ConnectOptions { host?: string; port?: number; password?: string; username?: string; }
export class RedisConnection {
  static connect(options?: ConnectOptions): Promise<RedisConnection>;
  command(...args: (string | Uint8Array)[]): Promise<any>;
  close(): void;
}

/** The protocol's backlog script (docs/protocol.md §2.1), byte for byte, and its SHA1. */
export const BACKLOG_SCRIPT: string;
export const BACKLOG_SCRIPT_SHA: string;
/** The most requests one backlog script call adds. */
export const SCRIPT_CHUNK: number;
/** How long the client trusts the max_backlog it read, in ms. */
export const LIMIT_REFRESH_MS: number;

export interface TensorIn { name: string; datatype: Datatype; shape: number[]; data: Uint8Array | unknown[]; }
export interface TensorOut { name: string; datatype: Datatype; shape: number[]; data: Uint8Array; readonly values: unknown; }
export interface Request {
  model: string;
  inputs: TensorIn[];
  id?: string;
  modelVersion?: string;
  timeoutMs?: number;
  priority?: number;
  outputs?: string[];
  parameters?: Record<string, string | number | bigint | boolean | Float64>;
}
export interface Timing {
  enqueued_ns: bigint; read_ns: bigint; batched_ns: bigint;
  compute_start_ns: bigint; compute_end_ns: bigint; published_ns: bigint;
}
export interface Reply {
  id: string; status: string; error?: string; model?: string; worker?: string;
  batchSize: number; timing: Timing; outputs: TensorOut[];
}
export interface ClientOptions extends ConnectOptions { stream?: string; replyPrefix?: string; timeoutMs?: number; }
export interface WaitOptions { timeoutMs?: number; }

export class InferClient {
  static connect(options?: ClientOptions): Promise<InferClient>;
  readonly replyTo: string;
  readonly stream: string;
  submit(request: Request, options?: WaitOptions): Promise<Reply>;
  submitEncoded(id: string, body: Uint8Array, options?: WaitOptions & { v?: string }): Promise<Reply>;
  infer(request: Request, options?: WaitOptions): Promise<Record<string, TensorOut>>;
  submitMany(requests: Request[], options?: WaitOptions): Promise<({ ok: true; reply: Reply } | { ok: false; error: Error })[]>;
  close(): Promise<void>;
}

export class InferError extends Error { status: string; reply?: Reply; }
export class InvalidArgument extends InferError {}
export class Malformed extends InferError {}
export class UnsupportedVersion extends InferError {}
export class TooLarge extends InferError {}
export class ModelNotFound extends InferError {}
export class Expired extends InferError {}
export class Busy extends InferError {}
export class Internal extends InferError {}
export class Unavailable extends InferError {}
export class Timeout extends InferError {}
export const ERROR_BY_STATUS: Readonly<Record<string, typeof InferError>>;
export function errorFor(status: string, message: string, reply?: Reply): InferError;
