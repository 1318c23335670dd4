/**
 * The closed set of errors a driver may throw or report. Each has a stable `code` that the agent
 * sends to the controller and the controller shows users; `retryable` tells the agent whether
 * trying the same thing again later can succeed. Anything else a driver throws is wrapped into a
 * `DriverInternalError` by `toDriverError`.
 */

/** Stable error codes, as the controller and users see them. */
export type DriverErrorCode =
  'DRIVER_CONFIG_INVALID' | 'CAPABILITY_NOT_SUPPORTED' | 'CONFLICT' | 'TRANSIENT' | 'HOST_UNREACHABLE' | 'DRIVER_INTERNAL' | 'DRIVER_INCOMPATIBLE';

/** What an error looks like on the wire (status reports). */
export interface DriverErrorInfo {
  code: DriverErrorCode;
  message: string;
  /** The offending field, for configuration errors: `config.hostNetns`, `desired.instances[2].nics[0].mac`. */
  path?: string;
  /** Whether applying again later may succeed; absent: decided by `code` (see `isRetryable`). */
  retryable?: boolean;
}

const RETRYABLE_CODES: ReadonlySet<DriverErrorCode> = new Set(['TRANSIENT', 'HOST_UNREACHABLE']);

/** Whether a reported error may go away when the same state is applied again (agents back off and retry those only). */
export function isRetryable(error: Pick<DriverErrorInfo, 'code' | 'retryable'>): boolean {
  return error.retryable ?? RETRYABLE_CODES.has(error.code);
}

/** Base of every driver error. */
export abstract class DriverError extends Error {
  abstract readonly code: DriverErrorCode;
  /** Whether the same operation may succeed when tried again later. */
  readonly retryable: boolean = false;

  toJSON(): DriverErrorInfo {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

/** A configuration value (plugin config or desired-state field) the driver cannot use. */
export class DriverConfigError extends DriverError {
  readonly code = 'DRIVER_CONFIG_INVALID';
  constructor(
    readonly path: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(`${path} ${reason} (got ${describe(value)})`);
    this.name = 'DriverConfigError';
  }

  override toJSON(): DriverErrorInfo {
    return { ...super.toJSON(), path: this.path };
  }
}

/** The desired state asks for something the driver's capabilities do not include. */
export class CapabilityNotSupportedError extends DriverError {
  readonly code = 'CAPABILITY_NOT_SUPPORTED';
  constructor(
    readonly capability: string,
    message = `this driver does not support ${capability}`,
  ) {
    super(message);
    this.name = 'CapabilityNotSupportedError';
  }
}

/** Something on the host that is not Gatehouse's is in the way (a port taken, a name in use). */
export class ConflictError extends DriverError {
  readonly code = 'CONFLICT';
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/** A temporary failure (a lock held, a daemon restarting); trying again later may succeed. */
export class TransientError extends DriverError {
  readonly code = 'TRANSIENT';
  override readonly retryable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransientError';
  }
}

/** The hypervisor or host API cannot be reached. */
export class HostUnreachableError extends DriverError {
  readonly code = 'HOST_UNREACHABLE';
  override readonly retryable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HostUnreachableError';
  }
}

/**
 * A bug or an unexpected failure inside the driver or a tool it runs. Not retryable when a driver
 * throws it; `toDriverError` makes one for anything else thrown (a tool that is missing or
 * failed, an exception) retryable, since the agent cannot tell that it will not go away.
 */
export class DriverInternalError extends DriverError {
  readonly code = 'DRIVER_INTERNAL';
  override readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options);
    this.name = 'DriverInternalError';
    this.retryable = options?.retryable ?? false;
  }
}

/** A plugin built for an API version this SDK does not speak, or not shaped like a driver. */
export class DriverIncompatibleError extends DriverError {
  readonly code = 'DRIVER_INCOMPATIBLE';
  constructor(message: string) {
    super(message);
    this.name = 'DriverIncompatibleError';
  }
}

/** Any thrown value as a driver error (unknown ones become a retryable `DriverInternalError`). */
export function toDriverError(err: unknown): DriverError {
  if (err instanceof DriverError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new DriverInternalError(message, { cause: err, retryable: true });
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = typeof value === 'number' || typeof value === 'bigint' ? String(value) : (JSON.stringify(value) ?? String(value));
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
