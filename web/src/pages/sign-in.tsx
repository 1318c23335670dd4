/** Sign-in with username and password; the session token it returns is kept for this tab. */
import { useState, type FormEvent } from 'react';
import { FormError, TextField } from '../components/form.js';
import { ErrorFields, graphql } from '../graphql.js';
import { useSession } from '../session.js';
import { useFormMutation } from '../use-form-mutation.js';

const SignInMutation = graphql(
  `
    mutation SignIn($input: SignInInput!) {
      signIn(input: $input) {
        __typename
        ... on SignInPayload {
          session {
            token
            expiresAt
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const FIELDS = ['username', 'password'] as const;

/** The sign-in page. */
export function SignInPage() {
  const session = useSession();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [{ fetching, errors }, signIn] = useFormMutation(SignInMutation, FIELDS);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await signIn({ input: { username, password } });
    if (payload) session.begin(payload.session.token);
  };
  return (
    <main className="sign-in" id="main">
      <form onSubmit={submit} aria-labelledby="sign-in-title" noValidate>
        <h1 id="sign-in-title">Sign in to Gatehouse</h1>
        {session.endedBecause && <p role="status">{session.endedBecause}</p>}
        <FormError errors={errors} />
        <TextField
          label="Username"
          name="username"
          errors={errors}
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          autoComplete="username"
          required
        />
        <TextField
          label="Password"
          name="password"
          type="password"
          errors={errors}
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          autoComplete="current-password"
          required
        />
        <button type="submit" disabled={fetching}>
          {fetching ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
