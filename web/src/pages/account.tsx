/** The signed-in user's account: change the password, and their API tokens. */
import { useState, type FormEvent } from 'react';
import { FormError, TextField } from '../components/form.js';
import { ErrorFields, graphql } from '../graphql.js';
import { useFormMutation } from '../use-form-mutation.js';
import { TokenManager } from './tokens.js';

/** setPassword: one's own (with the current password) or, for an admin, a user's. */
export const SetPassword = graphql(
  `
    mutation SetPassword($input: SetPasswordInput!) {
      setPassword(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

/** The Account page. */
export function AccountPage({ isAdmin }: { isAdmin: boolean }) {
  const [form, setForm] = useState({ currentPassword: '', password: '' });
  const [done, setDone] = useState(false);
  const [state, submit] = useFormMutation(SetPassword, ['currentPassword', 'password']);
  const change = async (event: FormEvent) => {
    event.preventDefault();
    setDone(false);
    if (await submit({ input: { currentPassword: form.currentPassword, password: form.password } })) {
      setForm({ currentPassword: '', password: '' });
      setDone(true);
    }
  };
  return (
    <section>
      <h1>Account</h1>
      <form className="card" onSubmit={change} aria-labelledby="password-title" noValidate>
        <h2 id="password-title">Change password</h2>
        <FormError errors={state.errors} />
        <div className="form-grid">
          <TextField
            label="Current password"
            name="currentPassword"
            type="password"
            autoComplete="current-password"
            errors={state.errors}
            value={form.currentPassword}
            onChange={(e) => setForm((f) => ({ ...f, currentPassword: e.target.value }))}
          />
          <TextField
            label="New password"
            name="password"
            type="password"
            autoComplete="new-password"
            errors={state.errors}
            value={form.password}
            onChange={(e) => setForm((f) => ({ ...f, password: e.target.value }))}
          />
        </div>
        <div className="form-actions">
          <button type="submit" disabled={state.fetching}>
            Change password
          </button>
        </div>
        {done && <p role="status">Password changed.</p>}
      </form>
      <h2>API tokens</h2>
      <p className="hint">For automation (the GraphQL API with `Authorization: Bearer …`); the panel itself signs in with your password.</p>
      <TokenManager isAdmin={isAdmin} />
    </section>
  );
}
