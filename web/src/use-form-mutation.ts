/** Runs a mutation whose result is `<Payload> | <error results>` and keeps the errors by form field. */
import { useCallback, useState } from 'react';
import { useMutation, type AnyVariables, type TypedDocumentNode } from 'urql';
import { NO_ERRORS, errorsFromCombined, errorsFromResult, isErrorResult, type FieldErrors } from './errors.js';

/** The payload member of a mutation's result union. */
export type PayloadOf<Data> = Extract<Data[keyof Data], { __typename?: `${string}Payload` }>;

/** `[{ fetching, errors }, submit, clear]`: submit resolves to the payload, or undefined after showing the errors. */
export function useFormMutation<Data extends object, Variables extends AnyVariables>(
  document: TypedDocumentNode<Data, Variables>,
  formFields: readonly string[],
): [{ fetching: boolean; errors: FieldErrors }, (variables: Variables) => Promise<PayloadOf<Data> | undefined>, () => void] {
  const [{ fetching }, run] = useMutation<Data, Variables>(document);
  const [errors, setErrors] = useState<FieldErrors>(NO_ERRORS);
  const submit = useCallback(
    async (variables: Variables) => {
      const result = await run(variables);
      if (result.error) {
        setErrors(errorsFromCombined(result.error));
        return undefined;
      }
      const value = Object.values(result.data ?? {})[0];
      if (isErrorResult(value)) {
        setErrors(errorsFromResult(value, formFields));
        return undefined;
      }
      setErrors(NO_ERRORS);
      return value as PayloadOf<Data>;
    },
    // the form's field list is fixed for its lifetime
    [run],
  );
  return [{ fetching, errors }, submit, () => setErrors(NO_ERRORS)];
}
