/**
 * Expected failures of the controller. Each has a stable `code`, the offending input `field`
 * (a dotted path such as `input.cidr`) and its `value`, and is turned into a typed GraphQL error
 * result once, in `graphql/schema/errors.ts`. Anything else that is thrown is unexpected: it is
 * logged and masked by the server.
 */

/** Stable error codes of the public API. */
export type ErrorCode =
  | 'VALIDATION_FAILED'
  | 'NOT_FOUND'
  | 'FORBIDDEN'
  | 'CONFLICT'
  | 'QUOTA_EXCEEDED'
  | 'POOL_EXHAUSTED'
  | 'ADDRESS_IN_USE'
  | 'PORT_CONFLICT'
  | 'CAPABILITY_NOT_SUPPORTED'
  | 'SIGN_IN_FAILED'
  | 'RATE_LIMITED';

/** Base of every expected failure. */
export abstract class GatehouseError extends Error {
  abstract readonly code: ErrorCode;

  constructor(
    message: string,
    /** Input path of the offending value, e.g. `input.gateway`. */
    readonly field?: string,
    /** The offending value as the caller sent it (stringified). */
    readonly value?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Input that is malformed or inconsistent. */
export class ValidationError extends GatehouseError {
  readonly code = 'VALIDATION_FAILED' as const;
  constructor(field: string, value: unknown, problem: string) {
    super(`${field} ${quote(value)} ${problem}`, field, display(value));
  }
}

/** An id that does not exist or that the caller may not see (the two are not told apart). */
export class NotFoundError extends GatehouseError {
  readonly code = 'NOT_FOUND' as const;
  constructor(field: string, value: string, what: string) {
    super(`${field}: no ${what} with id ${quote(value)}`, field, value);
  }
}

/** The caller is authenticated but lacks the scope for this operation. */
export class ForbiddenError extends GatehouseError {
  readonly code = 'FORBIDDEN' as const;
  constructor(message: string, field?: string, value?: string) {
    super(message, field, value);
  }
}

/** The change contradicts existing state (a duplicate name, an object still in use). */
export class ConflictError extends GatehouseError {
  readonly code = 'CONFLICT' as const;
  constructor(field: string, value: unknown, problem: string) {
    super(`${field} ${quote(value)} ${problem}`, field, display(value));
  }
}

/** The owner's quota does not allow the change. */
export class QuotaExceededError extends GatehouseError {
  readonly code = 'QUOTA_EXCEEDED' as const;
  constructor(
    readonly quota: string,
    readonly limit: number,
    readonly used: number,
    field: string,
    value: unknown,
  ) {
    super(`${field} ${quote(value)}: quota ${quota} exceeded (${used} of ${limit} used)`, field, display(value));
  }
}

/** No free address or prefix is left in the pool. */
export class PoolExhaustedError extends GatehouseError {
  readonly code = 'POOL_EXHAUSTED' as const;
  constructor(field: string, poolId: string, poolName: string) {
    super(`${field}: pool ${quote(poolName)} (${poolId}) has no free address left`, field, poolId);
  }
}

/** The address is already allocated, reserved or otherwise taken. */
export class AddressInUseError extends GatehouseError {
  readonly code = 'ADDRESS_IN_USE' as const;
  constructor(field: string, address: string, by: string) {
    super(`${field} ${quote(address)} is already in use (${by})`, field, address);
  }
}

/** A host port (range) is already forwarded for that protocol and address. */
export class PortConflictError extends GatehouseError {
  readonly code = 'PORT_CONFLICT' as const;
  constructor(field: string, value: string, problem: string) {
    super(`${field} ${quote(value)} ${problem}`, field, value);
  }
}

/** The host's driver (as its agent reported it) cannot apply what was asked. */
export class CapabilityNotSupportedError extends GatehouseError {
  readonly code = 'CAPABILITY_NOT_SUPPORTED' as const;
  constructor(
    /** The capability's key below the driver's capabilities, e.g. `portForwards.ipv6`. */
    readonly capability: string,
    message: string,
    field: string,
    value: string,
  ) {
    super(message, field, value);
  }
}

/** The username or password is wrong (which of the two is not told). */
export class SignInFailedError extends GatehouseError {
  readonly code = 'SIGN_IN_FAILED' as const;
  constructor(field: string) {
    super('Sign-in failed: the username or the password is wrong', field);
  }
}

/** Too many failed attempts: refused without checking until `retryAfterSeconds` have passed. */
export class RateLimitedError extends GatehouseError {
  readonly code = 'RATE_LIMITED' as const;
  constructor(
    readonly retryAfterSeconds: number,
    field: string,
    value: string,
  ) {
    super(`${field} ${quote(value)}: too many failed sign-ins; try again in ${retryAfterSeconds} s`, field, value);
  }
}

function display(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ?? String(value);
  } catch {
    return String(value);
  }
}

function quote(value: unknown): string {
  const text = display(value);
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

/** The PostgreSQL error code (SQLSTATE) and constraint of a driver error, looking through wrappers. */
export function postgresErrorOf(err: unknown): { code: string; constraint?: string } | undefined {
  let e: unknown = err;
  for (let depth = 0; e && depth < 5; depth++) {
    const candidate = e as { code?: unknown; constraint?: unknown; constraint_name?: unknown; cause?: unknown };
    if (typeof candidate.code === 'string' && /^[0-9A-Z]{5}$/.test(candidate.code)) {
      const constraint = candidate.constraint_name ?? candidate.constraint;
      return { code: candidate.code, constraint: typeof constraint === 'string' ? constraint : undefined };
    }
    e = candidate.cause;
  }
  return undefined;
}

/**
 * Runs `work` and turns a unique-constraint violation of a listed constraint into the expected
 * failure it stands for; the database, not a prior check, decides what is a duplicate.
 */
export async function mapUniqueViolations<T>(work: () => Promise<T>, byConstraint: Record<string, () => GatehouseError>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    const pg = postgresErrorOf(err);
    const mapped = pg?.code === '23505' && pg.constraint ? byConstraint[pg.constraint] : undefined;
    throw mapped ? mapped() : err;
  }
}

/** Whether the error is a unique-constraint violation, optionally of the named constraint. */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const pg = postgresErrorOf(err);
  return pg?.code === '23505' && (constraint === undefined || pg.constraint === constraint);
}
