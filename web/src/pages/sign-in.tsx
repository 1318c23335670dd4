/** Sign-in with an API token (step before username and password). */
import { useState, type FormEvent } from 'react';
import { NO_ERRORS } from '../errors.js';
import { TextField } from '../components/form.js';
import { useSession } from '../session.js';

/** The sign-in page. */
export function SignInPage() {
  const session = useSession();
  const [token, setToken] = useState('');
  const submit = (event: FormEvent) => {
    event.preventDefault();
    session.begin(token.trim());
  };
  return (
    <main className="sign-in" id="main">
      <form onSubmit={submit} aria-labelledby="sign-in-title">
        <h1 id="sign-in-title">Sign in to Gatehouse</h1>
        {session.endedBecause && <p role="status">{session.endedBecause}</p>}
        <TextField label="API token" name="token" errors={NO_ERRORS} value={token} onChange={(e) => setToken(e.target.value)} required />
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}
