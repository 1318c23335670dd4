/** IP pools: list with utilisation bars, create and edit, and one pool's addresses (in use, reserved with notes) with reserve/unreserve. */
import { useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { DataTable } from '../components/data-table.js';
import { FormError, SelectField, TextField } from '../components/form.js';
import { Meter } from '../components/meter.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { ErrorFields, graphql } from '../graphql.js';
import { Link } from '../router.js';
import { splitList } from '../text.js';
import { useFormMutation } from '../use-form-mutation.js';

const PoolsQuery = graphql(`
  query IpPools($first: Int!, $after: String) {
    ipPools(first: $first, after: $after) {
      edges {
        node {
          id
          name
          kind
          family
          network
          subnet
          gateway
          dns
          rangeStart
          rangeEnd
          host {
            id
            name
          }
          utilisation {
            size
            allocated
            reserved
            free
          }
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
  }
`);

const PoolEntriesQuery = graphql(`
  query IpPoolEntries($id: ID!, $first: Int!, $after: String) {
    ipPool(id: $id) {
      id
      entries(first: $first, after: $after) {
        edges {
          node {
            id
            address
            kind
            nicId
            instance {
              id
              name
              owner {
                id
                name
              }
            }
            note
            createdAt
          }
        }
        pageInfo {
          endCursor
          hasNextPage
        }
      }
    }
  }
`);

const CreatePool = graphql(
  `
    mutation CreateIpPool($input: CreateIpPoolInput!) {
      createIpPool(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const UpdatePool = graphql(
  `
    mutation UpdateIpPool($input: UpdateIpPoolInput!) {
      updateIpPool(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const ReserveAddress = graphql(
  `
    mutation ReserveAddress($input: ReserveAddressInput!) {
      reserveAddress(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const UnreserveAddress = graphql(
  `
    mutation UnreserveAddress($input: UnreserveAddressInput!) {
      unreserveAddress(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

/** A pool's use as a bar: allocated and reserved of its size. */
export function UtilisationBar({ name, utilisation }: { name: string; utilisation: { size: string; allocated: string; reserved: string; free: string } }) {
  const size = Number(utilisation.size);
  const used = Number(utilisation.allocated) + Number(utilisation.reserved);
  return (
    <div className="utilisation">
      <Meter label={`${name} used`} value={used} max={size} />
      <small>
        {utilisation.allocated} allocated, {utilisation.reserved} reserved, {utilisation.free} free of {utilisation.size}
      </small>
    </div>
  );
}

const CREATE_FIELDS = ['name', 'kind', 'network', 'cidr', 'gateway', 'dns', 'start', 'end'] as const;

/** The IP pools page (admins). */
export function IpPoolsPage() {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: PoolsQuery, variables: pages.variables });
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  const [selected, setSelected] = useState<string>();
  const [editing, setEditing] = useState<{ id: string; name: string; kind: 'PRIVATE' | 'PUBLIC'; dns: string }>();
  const [update, submitUpdate] = useFormMutation(UpdatePool, ['name', 'kind', 'dns']);
  const pools = data?.ipPools.edges.map((e) => e.node) ?? [];
  const save = async (event: FormEvent) => {
    event.preventDefault();
    if (!editing) return;
    const payload = await submitUpdate({ input: { poolId: editing.id, name: editing.name.trim(), kind: editing.kind, dns: splitList(editing.dns) } });
    if (payload) {
      setEditing(undefined);
      refresh();
    }
  };
  return (
    <section>
      <h1>IP pools</h1>
      {error && <p className="form-error">{error.message}</p>}
      <DataTable label="IP pools" columns={['Pool', 'Network', 'Range', 'Utilisation']} actions empty={data && pools.length === 0 && 'No pools yet.'}>
        {pools.map((p) => (
          <tr key={p.id}>
            <td>
              {p.name} <small className="hint">{p.kind.toLowerCase()}</small>
              {p.host && <small className="hint"> · host {p.host.name}</small>}
            </td>
            <td>
              {p.network} · {p.subnet}
              {p.gateway && <small className="hint"> gw {p.gateway}</small>}
              {p.dns.length > 0 && <small className="hint"> dns {p.dns.join(', ')}</small>}
            </td>
            <td>
              {p.rangeStart} – {p.rangeEnd}
            </td>
            <td>
              <UtilisationBar name={p.name} utilisation={p.utilisation} />
            </td>
            <td className="row-actions">
              <button type="button" className="secondary" aria-label={`Addresses of ${p.name}`} onClick={() => setSelected(p.id)}>
                Addresses
              </button>
              <button
                type="button"
                className="secondary"
                aria-label={`Edit ${p.name}`}
                onClick={() => setEditing({ id: p.id, name: p.name, kind: p.kind, dns: p.dns.join(', ') })}
              >
                Edit
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.ipPools.pageInfo} label="IP pools" />
      {editing && (
        <form className="card" onSubmit={save} aria-labelledby="edit-pool-title" noValidate>
          <h2 id="edit-pool-title">Edit pool</h2>
          <FormError errors={update.errors} />
          <div className="form-grid">
            <TextField
              label="Name"
              name="name"
              errors={update.errors}
              value={editing.name}
              onChange={(e) => setEditing({ ...editing, name: e.target.value })}
            />
            <SelectField
              label="Kind"
              name="kind"
              errors={update.errors}
              value={editing.kind}
              onChange={(e) => setEditing({ ...editing, kind: e.target.value as 'PRIVATE' | 'PUBLIC' })}
            >
              <option>PRIVATE</option>
              <option>PUBLIC</option>
            </SelectField>
            <TextField
              label="DNS servers"
              name="dns"
              errors={update.errors}
              value={editing.dns}
              onChange={(e) => setEditing({ ...editing, dns: e.target.value })}
            />
          </div>
          <div className="form-actions">
            <button type="submit">Save pool</button>
            <button type="button" className="secondary" onClick={() => setEditing(undefined)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      {selected && <PoolAddresses poolId={selected} name={pools.find((p) => p.id === selected)?.name ?? ''} onChanged={refresh} />}
      <CreatePoolForm onCreated={refresh} />
    </section>
  );
}

function PoolAddresses({ poolId, name, onChanged }: { poolId: string; name: string; onChanged(): void }) {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: PoolEntriesQuery, variables: { id: poolId, ...pages.variables } });
  const refresh = () => {
    reexecute({ requestPolicy: 'network-only' });
    onChanged();
  };
  const [form, setForm] = useState({ address: '', note: '' });
  const [reserve, submitReserve] = useFormMutation(ReserveAddress, ['address', 'note']);
  const [unreserve, submitUnreserve] = useFormMutation(UnreserveAddress, []);
  const entries = data?.ipPool?.entries.edges.map((e) => e.node) ?? [];
  const add = async (event: FormEvent) => {
    event.preventDefault();
    if (await submitReserve({ input: { poolId, address: form.address.trim(), note: form.note.trim() || null } })) {
      setForm({ address: '', note: '' });
      refresh();
    }
  };
  return (
    <div className="card">
      <h2>Addresses of {name}</h2>
      {error && <p className="form-error">{error.message}</p>}
      <FormError errors={unreserve.errors} />
      <DataTable
        label={`Addresses of ${name}`}
        columns={['Address', 'Use', 'Note']}
        actions
        empty={data && entries.length === 0 && 'No address is in use or reserved.'}
      >
        {entries.map((a) => (
          <tr key={a.id}>
            <td>{a.address}</td>
            <td>
              {a.kind.toLowerCase()}
              {a.instance ? (
                <>
                  {' · '}
                  <Link href={`/instances/${a.instance.id}`}>{a.instance.name}</Link>
                  {a.instance.owner && <small className="hint"> ({a.instance.owner.name})</small>}
                </>
              ) : (
                a.nicId && <small className="hint"> · NIC {a.nicId}</small>
              )}
            </td>
            <td>{a.note}</td>
            <td>
              {a.kind === 'RESERVED' && (
                <button
                  type="button"
                  className="danger"
                  aria-label={`Unreserve ${a.address}`}
                  onClick={async () => (await submitUnreserve({ input: { reservationId: a.id } })) && refresh()}
                >
                  Unreserve
                </button>
              )}
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.ipPool?.entries.pageInfo} label={`Addresses of ${name}`} />
      <form onSubmit={add} aria-labelledby="reserve-title" noValidate>
        <h3 id="reserve-title">Reserve an address</h3>
        <FormError errors={reserve.errors} />
        <div className="form-grid">
          <TextField
            label="Address"
            name="address"
            errors={reserve.errors}
            value={form.address}
            onChange={(e) => setForm((f) => ({ ...f, address: e.target.value }))}
          />
          <TextField
            label="Reservation note"
            name="note"
            errors={reserve.errors}
            value={form.note}
            onChange={(e) => setForm((f) => ({ ...f, note: e.target.value }))}
          />
        </div>
        <div className="form-actions">
          <button type="submit">Reserve</button>
        </div>
      </form>
    </div>
  );
}

function CreatePoolForm({ onCreated }: { onCreated(): void }) {
  const empty = { name: '', kind: 'PRIVATE' as 'PRIVATE' | 'PUBLIC', network: '', cidr: '', gateway: '', dns: '', start: '', end: '' };
  const [form, setForm] = useState(empty);
  const [state, submit] = useFormMutation(CreatePool, CREATE_FIELDS);
  const set = (name: keyof typeof form) => (event: { target: { value: string } }) => setForm((f) => ({ ...f, [name]: event.target.value }));
  const create = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submit({
      input: {
        name: form.name.trim(),
        kind: form.kind,
        network: form.network.trim(),
        cidr: form.cidr.trim() || null,
        gateway: form.gateway.trim() || null,
        dns: form.dns.trim() ? splitList(form.dns) : null,
        start: form.start.trim() || null,
        end: form.end.trim() || null,
      },
    });
    if (payload) {
      setForm(empty);
      onCreated();
    }
  };
  return (
    <form className="card" onSubmit={create} aria-labelledby="add-pool-title" noValidate>
      <h2 id="add-pool-title">Add pool</h2>
      <FormError errors={state.errors} />
      <div className="form-grid">
        <TextField label="Pool name" name="name" errors={state.errors} value={form.name} onChange={set('name')} required />
        <SelectField label="Pool kind" name="kind" errors={state.errors} value={form.kind} onChange={set('kind')}>
          <option>PRIVATE</option>
          <option>PUBLIC</option>
        </SelectField>
        <TextField label="Network (bridge)" name="network" errors={state.errors} value={form.network} onChange={set('network')} placeholder="br0" required />
        <TextField label="CIDR" name="cidr" errors={state.errors} value={form.cidr} onChange={set('cidr')} placeholder="10.0.0.0/24" />
        <TextField label="Gateway" name="gateway" errors={state.errors} value={form.gateway} onChange={set('gateway')} placeholder="the first address" />
        <TextField label="Pool DNS servers" name="dns" errors={state.errors} value={form.dns} onChange={set('dns')} hint="comma-separated" />
        <TextField label="Range start" name="start" errors={state.errors} value={form.start} onChange={set('start')} placeholder="the whole subnet" />
        <TextField label="Range end" name="end" errors={state.errors} value={form.end} onChange={set('end')} />
      </div>
      <div className="form-actions">
        <button type="submit" disabled={state.fetching}>
          Add pool
        </button>
      </div>
    </form>
  );
}
