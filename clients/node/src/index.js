export { encode, decode, Float64, MsgpackError } from './msgpack.js';
export { flatValues, nest, packValues, DATATYPES, TensorError } from './tensor.js';
