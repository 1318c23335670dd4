/** Typed error results land beside the form field they name, or on the form when it has no such field. */
import { describe, expect, it } from 'vitest';
import { errorsFromResult, formFieldOf, isErrorResult } from '../src/errors.js';

const fields = ['hostPort', 'targetPort', 'sourceCidrs', 'note'] as const;

describe('error → field mapping', () => {
  it('maps input paths to form fields, nested paths to the field they start with', () => {
    expect(formFieldOf('input.hostPort', fields)).toBe('hostPort');
    expect(formFieldOf('input.sourceCidrs.1', fields)).toBe('sourceCidrs');
    expect(formFieldOf('input.instanceId', fields)).toBeUndefined();
    expect(formFieldOf(null, fields)).toBeUndefined();
  });

  it('puts the message at its field, or on the form', () => {
    const error = {
      __typename: 'ValidationError',
      code: 'VALIDATION_FAILED',
      message: 'input.hostPort "99999" is not a port',
      field: 'input.hostPort',
      value: '99999',
    };
    expect(errorsFromResult(error, fields)).toEqual({ byField: { hostPort: error.message } });
    const elsewhere = { ...error, field: 'input.instanceId', message: 'no instance' };
    expect(errorsFromResult(elsewhere, fields)).toEqual({ byField: {}, form: 'no instance' });
  });

  it('tells error results from payloads', () => {
    expect(isErrorResult({ __typename: 'PortConflictError', code: 'PORT_CONFLICT', message: 'taken' })).toBe(true);
    expect(isErrorResult({ __typename: 'CreatePortForwardPayload', portForward: {} })).toBe(false);
    expect(isErrorResult(null)).toBe(false);
  });
});
