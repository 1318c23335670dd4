/**
 * Expected failures as typed GraphQL results: every mutation returns a union of its payload and
 * these types, all implementing `Error { code message field value }`.
 */
import { CapabilityNotSupportedError, GatehouseError, QuotaExceededError, RateLimitedError, type ErrorCode } from '../../support/errors.js';
import { ERROR_CLASSES, builder } from '../builder.js';

const ErrorCodeEnum = builder.enumType('ErrorCode', {
  description: 'Stable codes of expected failures.',
  values: [
    'VALIDATION_FAILED',
    'NOT_FOUND',
    'FORBIDDEN',
    'CONFLICT',
    'QUOTA_EXCEEDED',
    'POOL_EXHAUSTED',
    'ADDRESS_IN_USE',
    'PORT_CONFLICT',
    'CAPABILITY_NOT_SUPPORTED',
    'SIGN_IN_FAILED',
    'RATE_LIMITED',
  ] as const satisfies readonly ErrorCode[],
});

/** The interface all error results implement. */
export const ErrorInterface = builder.interfaceRef<GatehouseError>('Error').implement({
  description: 'An expected failure: nothing was changed.',
  fields: (t) => ({
    code: t.field({ type: ErrorCodeEnum, resolve: (e) => e.code }),
    message: t.exposeString('message'),
    field: t.string({ nullable: true, description: 'Input path of the offending value, e.g. `input.cidr`.', resolve: (e) => e.field ?? null }),
    value: t.string({ nullable: true, description: 'The offending value as sent.', resolve: (e) => e.value ?? null }),
  }),
});

for (const ErrorClass of ERROR_CLASSES) {
  if (ErrorClass === QuotaExceededError || ErrorClass === CapabilityNotSupportedError || ErrorClass === RateLimitedError) continue;
  // the classes differ only in their code, so they share one definition
  builder.objectType(ErrorClass as unknown as new () => GatehouseError, {
    name: ErrorClass.name,
    interfaces: [ErrorInterface] as never,
    isTypeOf: (value) => value instanceof ErrorClass,
    fields: () => ({}),
  });
}

builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof QuotaExceededError,
  fields: (t) => ({
    quota: t.exposeString('quota', { description: 'Which quota, e.g. `quotaIpv4Addresses`.' }),
    limit: t.exposeInt('limit'),
    used: t.exposeInt('used'),
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
