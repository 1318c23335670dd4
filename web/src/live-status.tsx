/**
 * Apply statuses as agents report them: one `objectStatusChanged` subscription for the whole app;
 * badges show the latest reported status of their object, or the one their page loaded.
 */
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from 'react';
import { useSubscription } from 'urql';
import { graphql } from './graphql.js';

const StatusSubscription = graphql(`
  subscription ObjectStatusChanged {
    objectStatusChanged {
      objectId
      objectType
      status
      error
      revision
    }
  }
`);

/** A status as shown. */
export interface LiveStatus {
  status: string;
  error?: string | null;
}

interface LiveStatuses {
  get(id: string): LiveStatus | undefined;
  /** Drops what was reported for an object the user just changed (its status starts over as PENDING). */
  forget(id: string): void;
}

const LiveStatusContext = createContext<LiveStatuses>({ get: () => undefined, forget: () => undefined });

/** Holds the subscription while the user is signed in. */
export function LiveStatusProvider({ children }: { children: ReactNode }) {
  const [reported, setReported] = useState<ReadonlyMap<string, LiveStatus>>(new Map());
  useSubscription({ query: StatusSubscription }, (_previous, event) => {
    const change = event.objectStatusChanged;
    setReported((map) => new Map(map).set(change.objectId, { status: change.status, error: change.error }));
    return event;
  });
  const forget = useCallback((id: string) => {
    setReported((map) => {
      if (!map.has(id)) return map;
      const next = new Map(map);
      next.delete(id);
      return next;
    });
  }, []);
  const value = useMemo(() => ({ get: (id: string) => reported.get(id), forget }), [reported, forget]);
  return <LiveStatusContext.Provider value={value}>{children}</LiveStatusContext.Provider>;
}

/** Forgets an object's reported status (call after changing it). */
export function useForgetStatus(): (id: string) => void {
  return useContext(LiveStatusContext).forget;
}

/** The object's status: the latest reported one, else the loaded one; the reason when it failed. */
export function StatusBadge({ id, status, error }: { id: string; status: string; error?: string | null }) {
  const live = useContext(LiveStatusContext).get(id);
  const shown = live ?? { status, error };
  return (
    <span className="status-cell" data-object-id={id}>
      <span className={`status status-${shown.status}`}>{shown.status}</span>
      {shown.status === 'FAILED' && shown.error && <span className="status-reason">{shown.error}</span>}
    </span>
  );
}
