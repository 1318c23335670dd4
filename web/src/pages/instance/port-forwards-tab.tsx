/** Port forwards of an instance: list with live status, add (with the common-port presets), delete, CSV import with a dry-run plan, CSV export. */
import { useState, type FormEvent } from 'react';
import { useClient, useQuery } from 'urql';
import { CsvPlan, type PlanRow } from '../../components/csv-plan.js';
import { DataTable } from '../../components/data-table.js';
import { downloadText, exportFileName } from '../../download.js';
import { errorsFromCombined } from '../../errors.js';
import { FormError, SelectField, TextAreaField, TextField } from '../../components/form.js';
import { Pager, useCursorPages } from '../../components/pager.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { StatusBadge, useForgetStatus } from '../../live-status.js';
import { rangeText, rateLimitText } from '../../text.js';
import { useFormMutation } from '../../use-form-mutation.js';
import type { TabProps } from './instance-page.js';

const ForwardsQuery = graphql(`
  query InstanceForwards($id: ID!, $first: Int!, $after: String) {
    portForwards(instanceId: $id, first: $first, after: $after) {
      edges {
        node {
          id
          protocol
          hostAddress
          hostPorts {
            start
            end
          }
          targetAddress
          targetPorts {
            start
            end
          }
          sourceCidrs
          rateLimit {
            perSource
            total
            burst
            action
          }
          rateLimited {
            connections
          }
          note
          status
          statusError
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
    commonPorts {
      service
      port
      protocol
    }
  }
`);

const CreateForward = graphql(
  `
    mutation CreatePortForward($input: CreatePortForwardInput!) {
      createPortForward(input: $input) {
        __typename
        ... on CreatePortForwardPayload {
          portForward {
            id
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DeleteForward = graphql(
  `
    mutation DeletePortForward($input: DeletePortForwardInput!) {
      deletePortForward(input: $input) {
        __typename
        ... on DeletePortForwardPayload {
          portForward {
            id
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const ImportForwards = graphql(
  `
    mutation ImportPortForwards($input: ImportPortForwardsInput!) {
      importPortForwards(input: $input) {
        __typename
        ... on ImportPortForwardsPayload {
          result {
            dryRun
            applied
            created
            rows {
              row
              action
              column
              reason
              portForward {
                protocol
                hostPorts {
                  start
                  end
                }
                targetAddress
                targetPorts {
                  start
                  end
                }
              }
            }
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const ExportForwards = graphql(`
  query ExportPortForwards($hostId: ID!, $instanceId: ID) {
    exportPortForwards(hostId: $hostId, instanceId: $instanceId)
  }
`);

const FORM_FIELDS = ['protocol', 'hostPort', 'targetAddress', 'targetPort', 'sourceCidrs', 'note'] as const;
const PROTOCOLS = ['TCP', 'UDP', 'BOTH'] as const;
type Protocol = (typeof PROTOCOLS)[number];

/** The Port forwards tab. */
export function PortForwardsTab({ instance }: TabProps) {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: ForwardsQuery, variables: { id: instance.id, ...pages.variables } });
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  const forget = useForgetStatus();
  const [form, setForm] = useState({ preset: '', protocol: 'TCP' as Protocol, hostPort: '', targetAddress: '', targetPort: '', sourceCidrs: '', note: '' });
  const [create, submitCreate] = useFormMutation(CreateForward, FORM_FIELDS);
  const [remove, submitDelete] = useFormMutation(DeleteForward, []);
  const addresses = instance.nics.flatMap((n) => n.addresses.map((a) => a.address));
  const set = (name: keyof typeof form) => (event: { target: { value: string } }) => setForm((f) => ({ ...f, [name]: event.target.value }));

  const applyPreset = (value: string) => {
    const preset = data?.commonPorts.find((p) => p.service === value);
    if (preset) setForm((f) => ({ ...f, preset: value, targetPort: String(preset.port), protocol: preset.protocol, note: f.note || preset.service }));
    else setForm((f) => ({ ...f, preset: '' }));
  };
  // the select names a preset only while the form still holds its port and protocol (edited by hand or cleared after a create: Custom)
  const chosen = data?.commonPorts.find((p) => p.service === form.preset);
  const presetShown = chosen && String(chosen.port) === form.targetPort.trim() && chosen.protocol === form.protocol ? form.preset : '';

  const add = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submitCreate({
      input: {
        instanceId: instance.id,
        protocol: form.protocol,
        hostPort: form.hostPort.trim() || null,
        targetAddress: form.targetAddress || null,
        targetPort: form.targetPort.trim(),
        sourceCidrs: form.sourceCidrs.trim() ? form.sourceCidrs.split(',').map((s) => s.trim()) : null,
        note: form.note.trim() || null,
      },
    });
    if (payload) {
      forget(payload.portForward.id);
      setForm((f) => ({ ...f, preset: '', hostPort: '', targetPort: '', sourceCidrs: '', note: '' }));
      refresh();
    }
  };

  const rows = data?.portForwards.edges.map((e) => e.node) ?? [];
  return (
    <div>
      <h2>Port forwards</h2>
      {error && <p className="form-error">{error.message}</p>}
      <FormError errors={remove.errors} />
      <DataTable
        label="Port forwards"
        columns={['Protocol', 'Host port', 'Target', 'Sources', 'Rate limit', 'Note', 'Status']}
        actions
        empty={data && rows.length === 0 && 'No port forwards yet.'}
      >
        {rows.map((f) => (
          <tr key={f.id} data-forward-id={f.id}>
            <td>{f.protocol}</td>
            <td>
              {f.hostAddress ? `${f.hostAddress}:` : ''}
              {rangeText(f.hostPorts)}
            </td>
            <td>
              {f.targetAddress}:{rangeText(f.targetPorts)}
            </td>
            <td>{f.sourceCidrs.join(', ') || 'any'}</td>
            <td>{rateLimitText(f.rateLimit, f.rateLimited)}</td>
            <td>{f.note}</td>
            <td>
              <StatusBadge id={f.id} status={f.status} error={f.statusError} />
            </td>
            <td>
              <button
                type="button"
                className="danger"
                aria-label={`Delete forward ${rangeText(f.hostPorts)}/${f.protocol.toLowerCase()}`}
                onClick={async () => (await submitDelete({ input: { portForwardId: f.id } })) && refresh()}
              >
                Delete
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.portForwards.pageInfo} label="Port forwards" />

      <form className="card" onSubmit={add} aria-labelledby="add-forward-title" noValidate>
        <h2 id="add-forward-title">Add port forward</h2>
        <FormError errors={create.errors} />
        <div className="form-grid">
          <SelectField label="Preset" name="preset" errors={create.errors} value={presetShown} onChange={(e) => applyPreset(e.target.value)}>
            <option value="">Custom</option>
            {data?.commonPorts.map((p) => (
              <option key={p.service} value={p.service}>
                {p.service} ({p.port}/{p.protocol.toLowerCase()})
              </option>
            ))}
          </SelectField>
          <SelectField
            label="Protocol"
            name="protocol"
            errors={create.errors}
            value={form.protocol}
            onChange={(e) => setForm((f) => ({ ...f, protocol: e.target.value as Protocol }))}
          >
            {PROTOCOLS.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </SelectField>
          <TextField
            label="Host port"
            name="hostPort"
            errors={create.errors}
            value={form.hostPort}
            onChange={set('hostPort')}
            placeholder="auto"
            hint="10022 or 8000-8010; empty: the lowest free port"
          />
          <SelectField label="Instance address" name="targetAddress" errors={create.errors} value={form.targetAddress} onChange={set('targetAddress')}>
            <option value="">First address ({addresses[0] ?? 'none'})</option>
            {addresses.map((a) => (
              <option key={a}>{a}</option>
            ))}
          </SelectField>
          <TextField label="Instance port" name="targetPort" errors={create.errors} value={form.targetPort} onChange={set('targetPort')} required />
          <TextField
            label="Allowed sources"
            name="sourceCidrs"
            errors={create.errors}
            value={form.sourceCidrs}
            onChange={set('sourceCidrs')}
            placeholder="any"
            hint="CIDRs, comma-separated"
          />
          <TextField label="Note" name="note" errors={create.errors} value={form.note} onChange={set('note')} />
        </div>
        <div className="form-actions">
          <button type="submit" disabled={create.fetching}>
            Add port forward
          </button>
        </div>
      </form>

      <CsvImport hostId={instance.host.id} onApplied={refresh} />
      <CsvExport instance={instance} />
    </div>
  );
}

const SAMPLE = 'protocol,host_port,vm_ip,vm_port,note\ntcp,8080,10.0.0.5,80,Web';

/** CSV import: the plan of a dry run first, then the import once the user confirms. */
function CsvImport({ hostId, onApplied }: { hostId: string; onApplied(): void }) {
  const [csv, setCsv] = useState('');
  const [plan, setPlan] = useState<{ csv: string; rows: PlanRow[] }>();
  const [done, setDone] = useState<string>();
  const [state, submit] = useFormMutation(ImportForwards, ['csv']);
  const preview = async (event: FormEvent) => {
    event.preventDefault();
    setDone(undefined);
    const payload = await submit({ input: { hostId, csv, dryRun: true } });
    setPlan(payload ? { csv, rows: payload.result.rows } : undefined);
  };
  const apply = async () => {
    if (!plan) return;
    const payload = await submit({ input: { hostId, csv: plan.csv, dryRun: false } });
    if (payload) {
      setDone(`Imported: ${payload.result.created} port forwards created.`);
      setPlan(undefined);
      setCsv('');
      onApplied();
    }
  };
  const blocked = plan?.rows.some((r) => r.action === 'CONFLICT' || r.action === 'INVALID');
  return (
    <form className="card" onSubmit={preview} aria-labelledby="import-title" noValidate>
      <h2 id="import-title">Import from CSV</h2>
      <FormError errors={state.errors} />
      <TextAreaField
        label="CSV"
        name="csv"
        errors={state.errors}
        value={csv}
        onChange={(e) => {
          setCsv(e.target.value);
          setPlan(undefined);
        }}
        placeholder={SAMPLE}
        hint="Columns: protocol,host_port,vm_ip,vm_port,note (for any instance of this host)"
      />
      <div className="form-actions">
        <button type="submit" className="secondary" disabled={state.fetching || csv.trim() === ''}>
          Preview import
        </button>
        {plan && (
          <button type="button" onClick={apply} disabled={state.fetching || blocked}>
            Apply import
          </button>
        )}
      </div>
      {done && <p role="status">{done}</p>}
      {plan && (
        <>
          {blocked && <p className="form-error">Some rows cannot be imported; fix them and preview again.</p>}
          <CsvPlan rows={plan.rows} />
        </>
      )}
    </form>
  );
}

/** CSV export: this instance's forwards, in the import format, saved as `port-forwards-<instance>.csv`. */
function CsvExport({ instance }: { instance: { id: string; name: string; host: { id: string; name: string } } }) {
  const client = useClient();
  const [fetching, setFetching] = useState(false);
  const [error, setError] = useState<string>();
  const [saved, setSaved] = useState<string>();
  const run = async () => {
    setFetching(true);
    setError(undefined);
    setSaved(undefined);
    const result = await client.query(ExportForwards, { hostId: instance.host.id, instanceId: instance.id }, { requestPolicy: 'network-only' }).toPromise();
    setFetching(false);
    if (result.error || !result.data) {
      setError(`The export failed: ${result.error ? errorsFromCombined(result.error).form : 'the controller returned no data'}`);
      return;
    }
    const fileName = exportFileName('port-forwards', instance.name, 'csv');
    downloadText(result.data.exportPortForwards, fileName, 'text/csv;charset=utf-8');
    setSaved(`Saved ${fileName}.`);
  };
  return (
    <section className="card" aria-labelledby="export-title">
      <h2 id="export-title">Export to CSV</h2>
      <p className="hint">
        This instance's port forwards in the import format, ready to import again on host {instance.host.name} (rows already there are planned as unchanged when
        imported again).
      </p>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      <div className="form-actions">
        <button type="button" className="secondary" onClick={run} disabled={fetching}>
          Export CSV
        </button>
      </div>
      {saved && <p role="status">{saved}</p>}
    </section>
  );
}
