/** Labelled form controls whose typed error is shown beside them (and announced to screen readers). */
import { useId, type InputHTMLAttributes, type ReactNode, type SelectHTMLAttributes, type TextareaHTMLAttributes } from 'react';
import type { FieldErrors } from '../errors.js';

interface FieldFrame {
  label: string;
  name: string;
  errors: FieldErrors;
  hint?: ReactNode;
}

function useFieldIds(name: string) {
  const id = `${useId()}-${name}`;
  return { id, errorId: `${id}-error`, hintId: `${id}-hint` };
}

function Frame({ id, errorId, hintId, label, name, errors, hint, children }: FieldFrame & ReturnType<typeof useFieldIds> & { children: ReactNode }) {
  const error = errors.byField[name];
  return (
    <div className={error ? 'field field-invalid' : 'field'}>
      <label htmlFor={id}>{label}</label>
      {children}
      {hint && (
        <small id={hintId} className="hint">
          {hint}
        </small>
      )}
      {error && (
        <span id={errorId} className="field-error" role="alert" data-field={name}>
          {error}
        </span>
      )}
    </div>
  );
}

function described(name: string, errors: FieldErrors, ids: ReturnType<typeof useFieldIds>, hint: unknown) {
  const error = errors.byField[name];
  return {
    id: ids.id,
    name,
    'aria-invalid': error ? true : undefined,
    'aria-describedby': [error ? ids.errorId : '', hint ? ids.hintId : ''].filter(Boolean).join(' ') || undefined,
  } as const;
}

/** A labelled input. */
export function TextField({ label, name, errors, hint, ...input }: FieldFrame & InputHTMLAttributes<HTMLInputElement>) {
  const ids = useFieldIds(name);
  return (
    <Frame {...ids} label={label} name={name} errors={errors} hint={hint}>
      <input {...input} {...described(name, errors, ids, hint)} />
    </Frame>
  );
}

/** A labelled select. */
export function SelectField({ label, name, errors, hint, children, ...select }: FieldFrame & SelectHTMLAttributes<HTMLSelectElement>) {
  const ids = useFieldIds(name);
  return (
    <Frame {...ids} label={label} name={name} errors={errors} hint={hint}>
      <select {...select} {...described(name, errors, ids, hint)}>
        {children}
      </select>
    </Frame>
  );
}

/** A labelled text area. */
export function TextAreaField({ label, name, errors, hint, ...area }: FieldFrame & TextareaHTMLAttributes<HTMLTextAreaElement>) {
  const ids = useFieldIds(name);
  return (
    <Frame {...ids} label={label} name={name} errors={errors} hint={hint}>
      <textarea {...area} {...described(name, errors, ids, hint)} />
    </Frame>
  );
}

/** The form-level message: errors that name no field of the form, and transport failures. */
export function FormError({ errors }: { errors: FieldErrors }) {
  if (!errors.form) return null;
  return (
    <p className="form-error" role="alert">
      {errors.form}
    </p>
  );
}
