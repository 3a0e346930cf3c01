// One error type per reply status, plus the client's own Busy and Timeout.

/** A reply with a status other than OK, or a request the client gave up on. */
export class InferError extends Error {
  /**
   * @param {string} status
   * @param {string} message
   * @param {object} [reply]
   */
  constructor(status, message, reply) {
    super(`${status}: ${message}`);
    this.name = this.constructor.name;
    this.status = status;
    this.reply = reply;
  }
}

export class InvalidArgument extends InferError {}
export class Malformed extends InferError {}
export class UnsupportedVersion extends InferError {}
export class TooLarge extends InferError {}
export class ModelNotFound extends InferError {}
export class Expired extends InferError {}
/** Refused by backpressure: the request stream's backlog is at the workers' max_backlog. Nothing was added. */
export class Busy extends InferError {}
export class Internal extends InferError {}
export class Unavailable extends InferError {}
/** No reply within the client's own timeout (the request may still be answered later; that reply is dropped). */
export class Timeout extends InferError {}

export const ERROR_BY_STATUS = Object.freeze({
  INVALID_ARGUMENT: InvalidArgument,
  MALFORMED: Malformed,
  UNSUPPORTED_VERSION: UnsupportedVersion,
  TOO_LARGE: TooLarge,
  MODEL_NOT_FOUND: ModelNotFound,
  EXPIRED: Expired,
  BUSY: Busy,
  INTERNAL: Internal,
  UNAVAILABLE: Unavailable,
  TIMEOUT: Timeout,
});

/** The typed error for a status (InferError for a status this client does not know). */
export function errorFor(status, message, reply) {
  const Cls = ERROR_BY_STATUS[status] ?? InferError;
  return new Cls(status, message, reply);
}
