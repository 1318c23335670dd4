/**
 * Expected failures as typed GraphQL results: every mutation returns a union of its payload and
 * these types, all implementing `Error { code message field value }`.
 */
import { CapabilityNotSupportedError, GatehouseError, QuotaExceededError, RateLimitedError, type ErrorCode } from '../../support/errors.js';
import { ERROR_CLASSES, builder } from '../builder.js';

const ErrorCodeEnum = builder.enumType('ErrorCode', {
  description: 'Stable codes of expected failures; clients branch on these, never on the message.',
  values: {
    VALIDATION_FAILED: { description: 'Input is malformed or inconsistent (ValidationError).' },
    NOT_FOUND: { description: 'No such object, or one the caller may not see; the two are not told apart (NotFoundError).' },
    FORBIDDEN: { description: "The token's scope does not allow the operation (ForbiddenError)." },
    CONFLICT: { description: 'The change contradicts existing state: a duplicate name, an object still in use (ConflictError).' },
    QUOTA_EXCEEDED: { description: "The owner's quota does not allow it (QuotaExceededError)." },
    POOL_EXHAUSTED: { description: 'No free address or prefix is left in the pool (PoolExhaustedError).' },
    ADDRESS_IN_USE: { description: 'The address is already allocated or reserved (AddressInUseError).' },
    PORT_CONFLICT: { description: 'The host port (range) is already forwarded for that protocol and address (PortConflictError).' },
    CAPABILITY_NOT_SUPPORTED: { description: "The host's driver cannot apply it (CapabilityNotSupportedError)." },
    SIGN_IN_FAILED: { description: 'The username or the password is wrong; which one is not said (SignInFailedError).' },
    RATE_LIMITED: { description: 'Too many failed attempts; try again after retryAfterSeconds (RateLimitedError).' },
  } as const satisfies Record<ErrorCode, { description: string }>,
});

// one line per error type in GraphiQL's docs
const ERROR_DESCRIPTIONS: Record<string, string> = {
  ValidationError: 'Input is malformed or inconsistent; `field` names it, `message` says what is wrong. Code VALIDATION_FAILED.',
  NotFoundError: 'An id that does not exist or that the caller may not see (the two are not told apart). Code NOT_FOUND.',
  ForbiddenError: 'The token is valid but its scope does not allow the operation (most are admin-only). Code FORBIDDEN.',
  ConflictError: 'The change contradicts existing state: a duplicate name, an object still in use, no free port left. Code CONFLICT.',
  PoolExhaustedError: "No free address or prefix is left in the pool (or in any pool of the NIC's network). Code POOL_EXHAUSTED.",
  AddressInUseError: 'The address is already allocated to a NIC or reserved. Code ADDRESS_IN_USE.',
  PortConflictError: 'The host port (range) is already forwarded for that protocol and host address. Code PORT_CONFLICT.',
  SignInFailedError: 'The username or the password is wrong (which one is not said, and an unknown user takes as long). Code SIGN_IN_FAILED.',
};

/** The interface all error results implement. */
export const ErrorInterface = builder.interfaceRef<GatehouseError>('Error').implement({
  description: 'An expected failure: nothing was changed.',
  fields: (t) => ({
    code: t.field({ type: ErrorCodeEnum, description: 'What kind of failure, stable across releases.', resolve: (e) => e.code }),
    message: t.exposeString('message', {
      description: 'For people: names the field and the value, e.g. `input.cidr "10.0.0.0/33" has an invalid prefix length`. Wording may change.',
    }),
    field: t.string({ nullable: true, description: 'Input path of the offending value, e.g. `input.cidr`.', resolve: (e) => e.field ?? null }),
    value: t.string({ nullable: true, description: 'The offending value as sent.', resolve: (e) => e.value ?? null }),
  }),
});

for (const ErrorClass of ERROR_CLASSES) {
  if (ErrorClass === QuotaExceededError || ErrorClass === CapabilityNotSupportedError || ErrorClass === RateLimitedError) continue;
  // the classes differ only in their code, so they share one definition
  builder.objectType(ErrorClass as unknown as new () => GatehouseError, {
    name: ErrorClass.name,
    description: ERROR_DESCRIPTIONS[ErrorClass.name],
    interfaces: [ErrorInterface] as never,
    isTypeOf: (value) => value instanceof ErrorClass,
    fields: () => ({}),
  });
}

builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  description: "The owner's quota does not allow the change; nothing was allocated. Code QUOTA_EXCEEDED.",
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof QuotaExceededError,
  fields: (t) => ({
    quota: t.exposeString('quota', { description: 'Which quota, e.g. `quotaIpv4Addresses`.' }),
    limit: t.exposeInt('limit', { description: "The owner's quota (an admin sets it with updateUserQuotas)." }),
    used: t.exposeInt('used', { description: 'How much of it is held now, before this change.' }),
  }),
});

builder.objectType(CapabilityNotSupportedError, {
  name: 'CapabilityNotSupportedError',
  description: "The host's driver cannot apply this object (Host.driver.capabilities says what it can).",
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof CapabilityNotSupportedError,
  fields: (t) => ({
    capability: t.exposeString('capability', { description: 'The capability the driver lacks, below Host.driver.capabilities, e.g. `portForwards.ipv6`.' }),
  }),
});

builder.objectType(RateLimitedError, {
  name: 'RateLimitedError',
  description: 'Too many failed sign-ins for this username or from this address: refused without checking the password.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof RateLimitedError,
  fields: (t) => ({
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', { description: 'When the next attempt will be checked.' }),
  }),
});
