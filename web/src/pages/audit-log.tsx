/** The audit log: newest first, filterable by object type and id, live (`auditLogAdded`), each change's before/after as a diff. */
import { useState, type FormEvent } from 'react';
import { useQuery, useSubscription } from 'urql';
import { DataTable } from '../components/data-table.js';
import { diffJson } from '../audit/json-diff.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { graphql, type ResultOf } from '../graphql.js';

const AuditEntryFields = graphql(`
  fragment AuditEntryFields on AuditEntry {
    id
    at
    action
    objectType
    objectId
    actorUserId
    actor {
      id
      name
    }
    tokenId
    requestId
    before
    after
  }
`);

// work the controller does on its own is recorded with the all-zero user id
const SYSTEM_USER_ID = '00000000-0000-0000-0000-000000000000';

/** Who made a change: the user's name, "system", or "another user" when the caller may not see who. */
function actorName(entry: { actorUserId: string | null; actor: { name: string } | null }): string {
  if (entry.actor) return entry.actor.name;
  return !entry.actorUserId || entry.actorUserId === SYSTEM_USER_ID ? 'system' : 'another user';
}

const AuditLogQuery = graphql(
  `
    query AuditLog($first: Int!, $after: String, $objectType: String, $objectId: String) {
      auditLog(first: $first, after: $after, objectType: $objectType, objectId: $objectId) {
        edges {
          node {
            ...AuditEntryFields
          }
        }
        pageInfo {
          endCursor
          hasNextPage
        }
      }
    }
  `,
  [AuditEntryFields],
);

const AuditAdded = graphql(
  `
    subscription AuditLogAdded($objectId: String) {
      auditLogAdded(objectId: $objectId) {
        ...AuditEntryFields
      }
    }
  `,
  [AuditEntryFields],
);

type Entry = ResultOf<typeof AuditEntryFields>;
// entries that arrived live are kept above the first page up to this many (older ones are on the pages)
const LIVE_KEPT = 200;

/** The before/after of one entry, field by field. */
export function AuditDiff({ before, after }: { before: unknown; after: unknown }) {
  const lines = diffJson(before, after);
  if (lines.length === 0) return <span className="hint">no field changed</span>;
  return (
    <pre className="diff">
      {lines.map((l) => (
        <span key={l.path}>
          {l.before !== undefined && <span className="removed">{`- ${l.path}: ${l.before}\n`}</span>}
          {l.after !== undefined && <span className="added">{`+ ${l.path}: ${l.after}\n`}</span>}
        </span>
      ))}
    </pre>
  );
}

/** The Audit log page. */
export function AuditLogPage() {
  const pages = useCursorPages();
  const [filter, setFilter] = useState({ objectType: '', objectId: '' });
  const [draft, setDraft] = useState(filter);
  const variables = { ...pages.variables, objectType: filter.objectType || null, objectId: filter.objectId || null };
  const [{ data, error }] = useQuery({ query: AuditLogQuery, variables });
  const [live, setLive] = useState<Entry[]>([]);
  useSubscription({ query: AuditAdded, variables: { objectId: filter.objectId || null } }, (_previous, event) => {
    const entry = event.auditLogAdded;
    // the subscription filters by object id only; the type filter is applied here
    if (!filter.objectType || entry.objectType === filter.objectType) setLive((l) => [entry, ...l].slice(0, LIVE_KEPT));
    return event;
  });
  const loaded = data?.auditLog.edges.map((e) => e.node) ?? [];
  const seen = new Set(loaded.map((e) => e.id));
  const rows = pages.page === 1 ? [...live.filter((e) => !seen.has(e.id)), ...loaded] : loaded;
  const apply = (event: FormEvent) => {
    event.preventDefault();
    setFilter(draft);
    setLive([]);
    pages.reset();
  };
  return (
    <section>
      <h1>Audit log</h1>
      <form className="toolbar" onSubmit={apply} aria-label="Filter the audit log">
        <label htmlFor="audit-type">Object type</label>
        <input id="audit-type" value={draft.objectType} onChange={(e) => setDraft((d) => ({ ...d, objectType: e.target.value }))} placeholder="PortForward" />
        <label htmlFor="audit-object">Object id</label>
        <input id="audit-object" value={draft.objectId} onChange={(e) => setDraft((d) => ({ ...d, objectId: e.target.value }))} placeholder="any" />
        <button type="submit" className="secondary">
          Filter
        </button>
      </form>
      {error && <p className="form-error">{error.message}</p>}
      <DataTable label="Audit entries" columns={['When', 'Action', 'Object', 'Actor', 'Change']}>
        {rows.map((e) => (
          <tr key={e.id} data-audit-id={e.id}>
            <td>{new Date(e.at).toLocaleString()}</td>
            <td>{e.action}</td>
            <td>
              {e.objectType}
              <br />
              <small className="hint">{e.objectId}</small>
            </td>
            <td>
              <small>
                <span className="actor">{actorName(e)}</span>
                {e.tokenId ? ` · token ${e.tokenId.slice(0, 8)}` : ''}
                <br />
                <span className="hint">request {e.requestId}</span>
              </small>
            </td>
            <td>
              <AuditDiff before={e.before} after={e.after} />
            </td>
          </tr>
        ))}
        {data && rows.length === 0 && (
          <tr>
            <td colSpan={5}>No entries{filter.objectType || filter.objectId ? ' match' : ''}.</td>
          </tr>
        )}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.auditLog.pageInfo} label="Audit log" />
    </section>
  );
}
