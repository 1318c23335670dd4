/** NICs of an instance with their bridge, MAC and addresses; Add NIC (bridge, MAC or automatic, an address from the pool) and remove. */
import { useState, type FormEvent } from 'react';
import { DataTable } from '../../components/data-table.js';
import { FormError, TextField } from '../../components/form.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { StatusBadge, useForgetStatus } from '../../live-status.js';
import { useFormMutation } from '../../use-form-mutation.js';
import type { TabProps } from './instance-page.js';

const AddNic = graphql(
  `
    mutation AddNic($input: AddNicInput!) {
      addNic(input: $input) {
        __typename
        ... on AddNicPayload {
          added {
            nic {
              id
            }
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const RemoveNic = graphql(
  `
    mutation RemoveNic($input: RemoveNicInput!) {
      removeNic(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const FIELDS = ['network', 'name', 'mac', 'addresses'] as const;

/** The Network tab. */
export function NetworkTab({ instance, refresh }: TabProps) {
  const [form, setForm] = useState({ network: '', name: '', mac: '', addresses: '', allocate: true });
  const [add, submitAdd] = useFormMutation(AddNic, FIELDS);
  const [remove, submitRemove] = useFormMutation(RemoveNic, []);
  const forget = useForgetStatus();
  const set = (name: 'network' | 'name' | 'mac' | 'addresses') => (event: { target: { value: string } }) =>
    setForm((f) => ({ ...f, [name]: event.target.value }));
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const addresses = form.addresses.trim() ? form.addresses.split(',').map((a) => a.trim()) : null;
    const payload = await submitAdd({
      input: {
        instanceId: instance.id,
        network: form.network.trim(),
        name: form.name.trim() || null,
        mac: form.mac.trim() || null,
        addresses,
        allocate: !addresses && form.allocate ? ['IPV4'] : null,
      },
    });
    if (payload) {
      forget(payload.added.nic.id);
      setForm({ network: '', name: '', mac: '', addresses: '', allocate: true });
      refresh();
    }
  };
  return (
    <div>
      <h2>Network interfaces</h2>
      <FormError errors={remove.errors} />
      <DataTable label="Network interfaces" columns={['Name', 'Bridge', 'MAC', 'Addresses', 'Status']} actions>
        {instance.nics.map((nic) => (
          <tr key={nic.id}>
            <td>{nic.name}</td>
            <td>{nic.network}</td>
            <td>
              <code>{nic.mac}</code>
            </td>
            <td>{nic.addresses.map((a) => a.cidr).join(', ') || '—'}</td>
            <td>
              <StatusBadge id={nic.id} status={nic.status} error={nic.statusError} />
            </td>
            <td>
              <button
                type="button"
                className="danger"
                aria-label={`Remove ${nic.name}`}
                onClick={async () => (await submitRemove({ input: { nicId: nic.id } })) && refresh()}
              >
                Remove
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <form className="card" onSubmit={submit} aria-labelledby="add-nic-title" noValidate>
        <h2 id="add-nic-title">Add NIC</h2>
        <FormError errors={add.errors} />
        <div className="form-grid">
          <TextField label="Bridge (network)" name="network" errors={add.errors} value={form.network} onChange={set('network')} required placeholder="br-nat" />
          <TextField label="Name" name="name" errors={add.errors} value={form.name} onChange={set('name')} placeholder="automatic (eth1…)" />
          <TextField label="MAC" name="mac" errors={add.errors} value={form.mac} onChange={set('mac')} placeholder="automatic" />
          <TextField
            label="Static addresses"
            name="addresses"
            errors={add.errors}
            value={form.addresses}
            onChange={set('addresses')}
            hint="Comma-separated; empty: from the bridge's pool"
          />
          <div className="field checkbox">
            <input id="nic-allocate" type="checkbox" checked={form.allocate} onChange={(e) => setForm((f) => ({ ...f, allocate: e.target.checked }))} />
            <label htmlFor="nic-allocate">Allocate an IPv4 address</label>
          </div>
        </div>
        <div className="form-actions">
          <button type="submit" disabled={add.fetching}>
            Add NIC
          </button>
        </div>
      </form>
    </div>
  );
}
