export { encode, decode, Float64, MsgpackError } from './msgpack.js';
export { flatValues, nest, packValues, DATATYPES, TensorError } from './tensor.js';
export { RedisConnection, RedisError } from './resp.js';
export { InferClient } from './client.js';
export * from './errors.js';
export { BACKLOG_SCRIPT, BACKLOG_SCRIPT_SHA, SCRIPT_CHUNK, LIMIT_REFRESH_MS } from './backlog.js';
