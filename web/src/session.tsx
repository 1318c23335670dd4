/** The signed-in session: its bearer token (kept for this browser tab) and the API client acting with it. */
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { Provider } from 'urql';
import { createApiClient } from './client.js';

const STORAGE_KEY = 'gatehouse.session';

/** What pages know about the session. */
export interface Session {
  token: string | undefined;
  /** Keeps a token the controller issued (sign-in). */
  begin(token: string): void;
  /** Forgets the token (after signOut, or when the controller refused it). */
  end(reason?: string): void;
  /** Why the last session ended without the user asking, if it did. */
  endedBecause: string | undefined;
}

const SessionContext = createContext<Session | undefined>(undefined);

/** The current session. */
export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error('useSession outside <SessionProvider>');
  return session;
}

/** Provides the session and an urql client acting with its token. */
export function SessionProvider({ children }: { children: ReactNode }) {
  const [token, setToken] = useState<string | undefined>(() => sessionStorage.getItem(STORAGE_KEY) ?? undefined);
  const [endedBecause, setEndedBecause] = useState<string>();
  const end = useCallback((reason?: string) => {
    sessionStorage.removeItem(STORAGE_KEY);
    setToken(undefined);
    setEndedBecause(reason);
  }, []);
  const begin = useCallback((next: string) => {
    sessionStorage.setItem(STORAGE_KEY, next);
    setEndedBecause(undefined);
    setToken(next);
  }, []);
  const api = useMemo(() => createApiClient(token, () => end('Your session expired or was revoked; sign in again.')), [token, end]);
  useEffect(() => () => api.dispose(), [api]);
  const session = useMemo(() => ({ token, begin, end, endedBecause }), [token, begin, end, endedBecause]);
  return (
    <SessionContext.Provider value={session}>
      <Provider value={api.client}>{children}</Provider>
    </SessionContext.Provider>
  );
}
