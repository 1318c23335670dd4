/** API tokens of a user: listed with their use, revoked, and created — the secret is shown once, right after. */
import { useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { DataTable } from '../components/data-table.js';
import { FormError, SelectField, TextField } from '../components/form.js';
import { ErrorFields, graphql } from '../graphql.js';
import { useFormMutation } from '../use-form-mutation.js';

const TokenFields = graphql(`
  fragment TokenFields on ApiToken {
    id
    name
    kind
    scope
    prefix
    hostId
    createdAt
    lastUsedAt
    expiresAt
    revokedAt
  }
`);

const MyTokensQuery = graphql(
  `
    query MyTokens {
      me {
        id
        tokens {
          ...TokenFields
        }
      }
    }
  `,
  [TokenFields],
);

const UserTokensQuery = graphql(
  `
    query UserTokens($id: ID!) {
      user(id: $id) {
        id
        tokens {
          ...TokenFields
        }
      }
    }
  `,
  [TokenFields],
);

const CreateToken = graphql(
  `
    mutation CreateApiToken($input: CreateApiTokenInput!) {
      createApiToken(input: $input) {
        __typename
        ... on CreateApiTokenPayload {
          created {
            secret
            token {
              id
              name
            }
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const RevokeToken = graphql(
  `
    mutation RevokeApiToken($input: RevokeApiTokenInput!) {
      revokeApiToken(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

// an agent token is bound to one host: the admin picks it by name
const HostChoicesQuery = graphql(`
  query TokenHostChoices {
    hosts(first: 500) {
      edges {
        node {
          id
          name
        }
      }
    }
  }
`);

const date = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '—');

/** The tokens of `userId` (an admin managing a user), or of the signed-in user. */
export function TokenManager({ userId, isAdmin }: { userId?: string; isAdmin: boolean }) {
  const [mine, reexecuteMine] = useQuery({ query: MyTokensQuery, pause: userId !== undefined });
  const [theirs, reexecuteTheirs] = useQuery({ query: UserTokensQuery, variables: { id: userId ?? '' }, pause: userId === undefined });
  const refresh = () => (userId ? reexecuteTheirs : reexecuteMine)({ requestPolicy: 'network-only' });
  const tokens = (userId ? theirs.data?.user?.tokens : mine.data?.me.tokens) ?? [];
  const [form, setForm] = useState({ name: '', scope: 'USER' as 'USER' | 'ADMIN' | 'AGENT', hostId: '' });
  const [created, setCreated] = useState<{ name: string; secret: string }>();
  const [state, submit] = useFormMutation(CreateToken, ['name', 'scope', 'hostId']);
  const [revoke, submitRevoke] = useFormMutation(RevokeToken, []);
  const [hostChoices] = useQuery({ query: HostChoicesQuery, pause: !isAdmin });
  const hosts = hostChoices.data?.hosts.edges.map((e) => e.node) ?? [];
  const hostName = new Map(hosts.map((h) => [h.id, h.name]));
  const create = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submit({
      input: { name: form.name.trim(), scope: form.scope, hostId: form.scope === 'AGENT' ? form.hostId : null, userId: userId ?? null },
    });
    if (payload) {
      setCreated({ name: payload.created.token.name, secret: payload.created.secret });
      setForm((f) => ({ ...f, name: '' }));
      refresh();
    }
  };
  return (
    <div>
      <FormError errors={revoke.errors} />
      <DataTable label="API tokens" columns={['Name', 'Kind', 'Prefix', 'Last used', 'Expires / revoked']} actions>
        {tokens.map((t) => (
          <tr key={t.id} className={t.revokedAt ? 'disabled' : undefined}>
            <td>{t.name}</td>
            <td>
              {t.kind.toLowerCase()} · {t.scope.toLowerCase()}
              {t.hostId && <small className="hint"> · host {hostName.get(t.hostId) ?? t.hostId}</small>}
            </td>
            <td>
              <code>{t.prefix}…</code>
            </td>
            <td>{date(t.lastUsedAt)}</td>
            <td>{t.revokedAt ? `revoked ${date(t.revokedAt)}` : date(t.expiresAt)}</td>
            <td>
              {!t.revokedAt && (
                <button
                  type="button"
                  className="danger"
                  aria-label={`Revoke ${t.name}`}
                  onClick={async () => (await submitRevoke({ input: { tokenId: t.id } })) && refresh()}
                >
                  Revoke
                </button>
              )}
            </td>
          </tr>
        ))}
      </DataTable>
      {created && (
        <div className="card secret" role="status">
          <p>
            Token <strong>{created.name}</strong> created. Copy its secret now: it is not shown again.
          </p>
          <code className="token-secret">{created.secret}</code>
          <div className="form-actions">
            <button type="button" className="secondary" onClick={() => setCreated(undefined)}>
              I have copied it
            </button>
          </div>
        </div>
      )}
      <form className="card" onSubmit={create} aria-labelledby={`new-token-${userId ?? 'me'}`} noValidate>
        <h3 id={`new-token-${userId ?? 'me'}`}>New API token</h3>
        <FormError errors={state.errors} />
        <div className="form-grid">
          <TextField
            label="Token name"
            name="name"
            errors={state.errors}
            value={form.name}
            onChange={(e) => setForm((f) => ({ ...f, name: e.target.value }))}
            required
          />
          {isAdmin && (
            <SelectField
              label="Scope"
              name="scope"
              errors={state.errors}
              value={form.scope}
              onChange={(e) => setForm((f) => ({ ...f, scope: e.target.value as typeof form.scope }))}
            >
              <option value="USER">user</option>
              <option value="ADMIN">admin</option>
              <option value="AGENT">agent (one host)</option>
            </SelectField>
          )}
          {form.scope === 'AGENT' && (
            <SelectField
              label="Host"
              name="hostId"
              errors={state.errors}
              value={form.hostId}
              onChange={(e) => setForm((f) => ({ ...f, hostId: e.target.value }))}
              hint={hostChoices.fetching ? 'Loading hosts…' : hosts.length === 0 ? 'No host yet: add one first.' : undefined}
            >
              <option value="">Choose a host</option>
              {hosts.map((h) => (
                <option key={h.id} value={h.id}>
                  {h.name}
                </option>
              ))}
            </SelectField>
          )}
        </div>
        <div className="form-actions">
          <button type="submit" disabled={state.fetching}>
            Create token
          </button>
        </div>
      </form>
    </div>
  );
}
