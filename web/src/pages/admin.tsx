/** Admin: users (create, password, quotas, their API tokens) and hosts (port range, reserved ports, public addresses, default pool, agent token). */
import { useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { DataTable } from '../components/data-table.js';
import { FormError, SelectField, TextField } from '../components/form.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { ErrorFields, graphql, type ResultOf } from '../graphql.js';
import { splitList, rangeText } from '../text.js';
import { useFormMutation } from '../use-form-mutation.js';
import { SetPassword } from './account.js';
import { TokenManager } from './tokens.js';

const UsersQuery = graphql(`
  query AdminUsers($first: Int!, $after: String) {
    users(first: $first, after: $after) {
      edges {
        node {
          id
          name
          role
          hasPassword
          billingDay
          quotaPortForwards
          quotaForwardedPorts
          quotaWebProxies
          quotaIpv4Addresses
          quotaIpv6Prefixes
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
  }
`);

const HostsQuery = graphql(`
  query AdminHosts($first: Int!, $after: String) {
    hosts(first: $first, after: $after) {
      edges {
        node {
          id
          name
          backend
          portRange {
            start
            end
          }
          reservedPorts {
            start
            end
          }
          publicAddresses
          defaultPoolId
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
  }
`);

const CreateUser = graphql(
  `
    mutation CreateUser($input: CreateUserInput!) {
      createUser(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const UpdateQuotas = graphql(
  `
    mutation UpdateUserQuotas($input: UpdateUserQuotasInput!) {
      updateUserQuotas(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const UpdateHost = graphql(
  `
    mutation UpdateHost($input: UpdateHostInput!) {
      updateHost(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

type User = ResultOf<typeof UsersQuery>['users']['edges'][number]['node'];
type Host = ResultOf<typeof HostsQuery>['hosts']['edges'][number]['node'];
const QUOTAS = [
  ['quotaPortForwards', 'Port forwards'],
  ['quotaForwardedPorts', 'Forwarded ports'],
  ['quotaWebProxies', 'Web proxies'],
  ['quotaIpv4Addresses', 'IPv4 addresses'],
  ['quotaIpv6Prefixes', 'IPv6 prefixes'],
  ['billingDay', 'Billing day'],
] as const;
type QuotaField = (typeof QUOTAS)[number][0];
const optionalInt = (text: string) => (text.trim() === '' ? null : Number(text));
const ranges = (list: readonly { start: number; end: number }[]) => list.map(rangeText).join(', ');

/** The Admin page. */
export function AdminPage() {
  return (
    <section>
      <h1>Admin</h1>
      <Users />
      <Hosts />
    </section>
  );
}

function Users() {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: UsersQuery, variables: pages.variables });
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  const [selected, setSelected] = useState<{ user: User; part: 'password' | 'quotas' | 'tokens' }>();
  const users = data?.users.edges.map((e) => e.node) ?? [];
  return (
    <>
      <h2>Users</h2>
      {error && <p className="form-error">{error.message}</p>}
      <DataTable label="Users" columns={['User', 'Password', 'Quotas']} actions>
        {users.map((u) => (
          <tr key={u.id}>
            <td>
              {u.name} <small className="hint">{u.role.toLowerCase()}</small>
            </td>
            <td>{u.hasPassword ? 'set' : 'none'}</td>
            <td>
              <small>
                {QUOTAS.map(([field, label]) => `${label.toLowerCase()} ${u[field] ?? '∞'}`)
                  .slice(0, 5)
                  .join(' · ')}
              </small>
            </td>
            <td className="row-actions">
              {(['password', 'quotas', 'tokens'] as const).map((part) => (
                <button key={part} type="button" className="secondary" aria-label={`${part} of ${u.name}`} onClick={() => setSelected({ user: u, part })}>
                  {part[0]!.toUpperCase() + part.slice(1)}
                </button>
              ))}
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.users.pageInfo} label="Users" />
      {selected?.part === 'password' && <UserPassword key={selected.user.id} user={selected.user} onDone={refresh} />}
      {selected?.part === 'quotas' && <UserQuotas key={selected.user.id} user={selected.user} onDone={refresh} />}
      {selected?.part === 'tokens' && (
        <div className="card">
          <h3>API tokens of {selected.user.name}</h3>
          <TokenManager key={selected.user.id} userId={selected.user.id} isAdmin />
        </div>
      )}
      <CreateUserForm onCreated={refresh} />
    </>
  );
}

function UserPassword({ user, onDone }: { user: User; onDone(): void }) {
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const [state, submit] = useFormMutation(SetPassword, ['password']);
  const save = async (event: FormEvent) => {
    event.preventDefault();
    if (await submit({ input: { userId: user.id, password } })) {
      setPassword('');
      setDone(true);
      onDone();
    }
  };
  return (
    <form className="card" onSubmit={save} aria-labelledby="user-password-title" noValidate>
      <h3 id="user-password-title">Password of {user.name}</h3>
      <FormError errors={state.errors} />
      <TextField
        label="New password"
        name="password"
        type="password"
        autoComplete="new-password"
        errors={state.errors}
        value={password}
        onChange={(e) => setPassword(e.target.value)}
      />
      <div className="form-actions">
        <button type="submit">Set password</button>
      </div>
      {done && <p role="status">Password set; {user.name}'s sessions must sign in again.</p>}
    </form>
  );
}

function UserQuotas({ user, onDone }: { user: User; onDone(): void }) {
  const [form, setForm] = useState<Record<QuotaField, string>>(
    () => Object.fromEntries(QUOTAS.map(([field]) => [field, user[field]?.toString() ?? ''])) as Record<QuotaField, string>,
  );
  const [state, submit] = useFormMutation(
    UpdateQuotas,
    QUOTAS.map(([field]) => field),
  );
  const save = async (event: FormEvent) => {
    event.preventDefault();
    const input = { userId: user.id, ...Object.fromEntries(QUOTAS.map(([field]) => [field, optionalInt(form[field])])) };
    if (await submit({ input })) onDone();
  };
  return (
    <form className="card" onSubmit={save} aria-labelledby="quotas-title" noValidate>
      <h3 id="quotas-title">Quotas of {user.name}</h3>
      <FormError errors={state.errors} />
      <div className="form-grid">
        {QUOTAS.map(([field, label]) => (
          <TextField
            key={field}
            label={label}
            name={field}
            type="number"
            errors={state.errors}
            value={form[field]}
            onChange={(e) => setForm((f) => ({ ...f, [field]: e.target.value }))}
            placeholder={field === 'billingDay' ? '1' : 'unlimited'}
          />
        ))}
      </div>
      <div className="form-actions">
        <button type="submit">Save quotas</button>
      </div>
    </form>
  );
}

function CreateUserForm({ onCreated }: { onCreated(): void }) {
  const [form, setForm] = useState({ name: '', role: 'USER' as 'USER' | 'ADMIN', password: '' });
  const [state, submit] = useFormMutation(CreateUser, ['name', 'role', 'password']);
  const create = async (event: FormEvent) => {
    event.preventDefault();
    if (await submit({ input: { name: form.name.trim(), role: form.role, password: form.password || null } })) {
      setForm({ name: '', role: 'USER', password: '' });
      onCreated();
    }
  };
  return (
    <form className="card" onSubmit={create} aria-labelledby="add-user-title" noValidate>
      <h3 id="add-user-title">Add user</h3>
      <FormError errors={state.errors} />
      <div className="form-grid">
        <TextField label="User name" name="name" errors={state.errors} value={form.name} onChange={(e) => setForm((f) => ({ ...f, name: e.target.value }))} />
        <SelectField
          label="Role"
          name="role"
          errors={state.errors}
          value={form.role}
          onChange={(e) => setForm((f) => ({ ...f, role: e.target.value as 'USER' | 'ADMIN' }))}
        >
          <option value="USER">user</option>
          <option value="ADMIN">admin</option>
        </SelectField>
        <TextField
          label="Initial password"
          name="password"
          type="password"
          autoComplete="new-password"
          errors={state.errors}
          value={form.password}
          onChange={(e) => setForm((f) => ({ ...f, password: e.target.value }))}
          hint="empty: API tokens only"
        />
      </div>
      <div className="form-actions">
        <button type="submit" disabled={state.fetching}>
          Add user
        </button>
      </div>
    </form>
  );
}

function Hosts() {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: HostsQuery, variables: pages.variables });
  const [editing, setEditing] = useState<Host>();
  const hosts = data?.hosts.edges.map((e) => e.node) ?? [];
  return (
    <>
      <h2>Hosts</h2>
      {error && <p className="form-error">{error.message}</p>}
      <DataTable label="Host settings" columns={['Host', 'Allowed ports', 'Reserved ports', 'Public addresses']} actions>
        {hosts.map((h) => (
          <tr key={h.id}>
            <td>
              {h.name} <small className="hint">{h.backend}</small>
              <br />
              <small className="hint">{h.id}</small>
            </td>
            <td>{ranges([h.portRange])}</td>
            <td>{ranges(h.reservedPorts) || '—'}</td>
            <td>{h.publicAddresses.join(', ') || '—'}</td>
            <td>
              <button type="button" className="secondary" aria-label={`Edit host ${h.name}`} onClick={() => setEditing(h)}>
                Edit
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.hosts.pageInfo} label="Hosts" />
      {editing && (
        <HostForm
          key={editing.id}
          host={editing}
          onDone={() => {
            setEditing(undefined);
            reexecute({ requestPolicy: 'network-only' });
          }}
        />
      )}
      <p className="hint">An agent token for a host: Users → Tokens of an admin, scope “agent”, then choose the host.</p>
    </>
  );
}

function HostForm({ host, onDone }: { host: Host; onDone(): void }) {
  const [form, setForm] = useState({
    portRangeStart: String(host.portRange.start),
    portRangeEnd: String(host.portRange.end),
    reservedPorts: ranges(host.reservedPorts),
    publicAddresses: host.publicAddresses.join(', '),
    defaultPoolId: host.defaultPoolId ?? '',
  });
  const [state, submit] = useFormMutation(UpdateHost, ['portRangeStart', 'portRangeEnd', 'reservedPorts', 'publicAddresses', 'defaultPoolId']);
  const set = (name: keyof typeof form) => (event: { target: { value: string } }) => setForm((f) => ({ ...f, [name]: event.target.value }));
  const save = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submit({
      input: {
        hostId: host.id,
        portRangeStart: optionalInt(form.portRangeStart),
        portRangeEnd: optionalInt(form.portRangeEnd),
        reservedPorts: splitList(form.reservedPorts),
        publicAddresses: splitList(form.publicAddresses),
        defaultPoolId: form.defaultPoolId.trim() || null,
      },
    });
    if (payload) onDone();
  };
  return (
    <form className="card" onSubmit={save} aria-labelledby="host-title" noValidate>
      <h3 id="host-title">Host {host.name}</h3>
      <FormError errors={state.errors} />
      <div className="form-grid">
        <TextField
          label="First allowed port"
          name="portRangeStart"
          type="number"
          errors={state.errors}
          value={form.portRangeStart}
          onChange={set('portRangeStart')}
        />
        <TextField label="Last allowed port" name="portRangeEnd" type="number" errors={state.errors} value={form.portRangeEnd} onChange={set('portRangeEnd')} />
        <TextField
          label="Reserved ports"
          name="reservedPorts"
          errors={state.errors}
          value={form.reservedPorts}
          onChange={set('reservedPorts')}
          hint="22, 8000-8010"
        />
        <TextField label="Public addresses" name="publicAddresses" errors={state.errors} value={form.publicAddresses} onChange={set('publicAddresses')} />
        <TextField label="Default pool id" name="defaultPoolId" errors={state.errors} value={form.defaultPoolId} onChange={set('defaultPoolId')} />
      </div>
      <div className="form-actions">
        <button type="submit">Save host</button>
      </div>
    </form>
  );
}
