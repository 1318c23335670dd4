/** Typed error results (`... on Error { code message field value }`) turned into messages beside the form fields they name. */
import type { CombinedError } from 'urql';

/** The fields every error result has. */
export interface ErrorResult {
  __typename: string;
  code: string;
  message: string;
  field?: string | null;
  value?: string | null;
}

/** Messages by form field name; `form` holds those that name no field of the form. */
export interface FieldErrors {
  byField: Record<string, string>;
  form?: string;
}

/** No errors. */
export const NO_ERRORS: FieldErrors = { byField: {} };

/** Whether a mutation result is an error result rather than its payload. */
export function isErrorResult(value: unknown): value is ErrorResult {
  return typeof value === 'object' && value !== null && typeof (value as ErrorResult).code === 'string' && typeof (value as ErrorResult).message === 'string';
}

/**
 * The form field an error's `field` names: `input.hostPort` → `hostPort`, `input.nics.0.mac` →
 * `nics.0.mac`; undefined when the form has no such field (then the message is shown for the form).
 */
export function formFieldOf(field: string | null | undefined, formFields: readonly string[]): string | undefined {
  if (!field) return undefined;
  const name = field.replace(/^input\./, '');
  if (formFields.includes(name)) return name;
  // a nested path such as `sourceCidrs.1` belongs to the field it starts with
  return formFields.find((f) => name.startsWith(`${f}.`));
}

/** Places an error result at its field, or on the form. */
export function errorsFromResult(error: ErrorResult, formFields: readonly string[]): FieldErrors {
  const name = formFieldOf(error.field, formFields);
  return name ? { byField: { [name]: error.message } } : { byField: {}, form: error.message };
}

/** A transport or GraphQL-level failure (not a typed result): shown for the whole form. */
export function errorsFromCombined(error: CombinedError): FieldErrors {
  const first = error.graphQLErrors[0];
  return { byField: {}, form: first ? first.message : error.networkError ? `The controller did not answer: ${error.networkError.message}` : error.message };
}
