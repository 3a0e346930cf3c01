export { encode, decode, Float64, MsgpackError } from './msgpack.js';
export { flatValues, nest, packValues, DATATYPES, TensorError } from './tensor.js';
export { RedisConnection, RedisError } from './resp.js';
export { InferClient } from './client.js';
export * from './errors.js';
