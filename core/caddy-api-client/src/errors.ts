/**
 * The errors the client throws. Each has a stable `code`; `retryable` says whether the same call
 * may succeed later without changing anything (Caddy down or slow, a concurrent writer).
 */

/** Stable error codes. */
export type CaddyErrorCode =
  | 'CADDY_API_ERROR'
  | 'CADDY_PRECONDITION_FAILED'
  | 'CADDY_UNREACHABLE'
  | 'CADDY_TIMEOUT'
  | 'CADDY_INVALID_PATH'
  | 'CADDY_UNEXPECTED_CONFIG'
  | 'CADDY_BAD_RESPONSE';

/** Base of every error this package throws. */
export abstract class CaddyClientError extends Error {
  abstract readonly code: CaddyErrorCode;
  /** Whether the same call may succeed when tried again later. */
  readonly retryable: boolean = false;
}

/** Caddy answered with a non-2xx status; `caddyMessage` is Caddy's own `{"error": "…"}` text. */
export class CaddyApiError extends CaddyClientError {
  readonly code: 'CADDY_API_ERROR' | 'CADDY_PRECONDITION_FAILED' = 'CADDY_API_ERROR';
  constructor(
    /** The HTTP status Caddy answered with (400 invalid config or path, 404 unknown @id, 412, 500 …). */
    readonly status: number,
    readonly method: string,
    /** The admin API path requested, as sent (`/config/apps/http/servers/s1`, `/id/route-1`, `/load`). */
    readonly path: string,
    /** Caddy's error message (the `error` field of its JSON body, or its plain-text body). */
    readonly caddyMessage: string,
    /** The admin endpoint, for the message (`unix//run/caddy/admin.sock`, `http://127.0.0.1:2019`). */
    readonly address: string,
  ) {
    super(`Caddy admin API ${method} ${path} failed with ${status} (${address}): ${caddyMessage}`);
    this.name = 'CaddyApiError';
  }
}

/** An `ifMatch` precondition did not hold (HTTP 412): the config changed since it was read; nothing was written. */
export class CaddyPreconditionFailedError extends CaddyApiError {
  override readonly code = 'CADDY_PRECONDITION_FAILED';
  override readonly retryable = true;
  constructor(
    method: string,
    path: string,
    caddyMessage: string,
    address: string,
    readonly ifMatch: string,
  ) {
    super(412, method, path, caddyMessage, address);
    this.name = 'CaddyPreconditionFailedError';
  }
}

/** The admin endpoint did not answer: no socket file, nothing listening, connection reset, or a timeout. */
export class CaddyUnreachableError extends CaddyClientError {
  readonly code: 'CADDY_UNREACHABLE' | 'CADDY_TIMEOUT' = 'CADDY_UNREACHABLE';
  override readonly retryable = true;
  constructor(
    /** The admin endpoint (`unix//run/caddy/admin.sock`, `http://127.0.0.1:2019`). */
    readonly address: string,
    readonly method: string,
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`Caddy admin API at ${address} is unreachable (${method} ${path}): ${reason}`, options);
    this.name = 'CaddyUnreachableError';
  }
}

/**
 * No complete answer within `timeoutMs`. For a write, the outcome is unknown: Caddy may have
 * applied it after the client gave up, so read the config again before retrying blindly.
 */
export class CaddyTimeoutError extends CaddyUnreachableError {
  override readonly code = 'CADDY_TIMEOUT';
  constructor(
    address: string,
    method: string,
    path: string,
    readonly timeoutMs: number,
  ) {
    super(address, method, path, `no answer within ${timeoutMs} ms`);
    this.name = 'CaddyTimeoutError';
  }
}

/** A config path or @id the client refuses to send, because Caddy could not address it as meant. */
export class CaddyInvalidPathError extends CaddyClientError {
  readonly code = 'CADDY_INVALID_PATH';
  constructor(
    readonly path: unknown,
    reason: string,
  ) {
    super(`Invalid Caddy config path ${JSON.stringify(path)}: ${reason}`);
    this.name = 'CaddyInvalidPathError';
  }
}

/** The config at a path does not have the shape an operation needs (upsertById on a parent that is not an array). */
export class CaddyUnexpectedConfigError extends CaddyClientError {
  readonly code = 'CADDY_UNEXPECTED_CONFIG';
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`Unexpected Caddy config at ${path}: ${reason}`);
    this.name = 'CaddyUnexpectedConfigError';
  }
}

/** Caddy answered 2xx with a body that is not the JSON it should be. */
export class CaddyBadResponseError extends CaddyClientError {
  readonly code = 'CADDY_BAD_RESPONSE';
  constructor(
    readonly method: string,
    readonly path: string,
    reason: string,
  ) {
    super(`Caddy admin API ${method} ${path} returned an unreadable response: ${reason}`);
    this.name = 'CaddyBadResponseError';
  }
}
