/** Bandwidth limits of an instance: ingress/egress caps, burst, monthly quota and its action. */
import { useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { FormError, SelectField, TextField } from '../../components/form.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { StatusBadge, useForgetStatus } from '../../live-status.js';
import { QuotaUsage } from '../../traffic/quota-usage.js';
import { useFormMutation } from '../../use-form-mutation.js';
import type { TabProps } from './instance-page.js';

const SetLimit = graphql(
  `
    mutation SetBandwidthLimit($input: SetBandwidthLimitInput!) {
      setBandwidthLimit(input: $input) {
        __typename
        ... on SetBandwidthLimitPayload {
          limit {
            id
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const UsageQuery = graphql(`
  query BandwidthUsage($id: ID!) {
    instance(id: $id) {
      id
      traffic {
        period {
          start
          end
          totalBytes
          quotaBytes
          quotaState
          throttled
        }
      }
    }
  }
`);

const FIELDS = ['ingressMbps', 'egressMbps', 'ingressBurstKb', 'egressBurstKb', 'monthlyQuotaGb', 'quotaAction', 'throttleMbps'] as const;
type Field = (typeof FIELDS)[number];

/** The numeric inputs, in form order (the quota action's select goes between the fifth and the sixth). */
const NUMBER_FIELDS: { name: Exclude<Field, 'quotaAction'>; label: string; hint?: string; placeholder?: string }[] = [
  { name: 'ingressMbps', label: 'Ingress limit (Mbps)', hint: 'External → instance; empty: none' },
  { name: 'egressMbps', label: 'Egress limit (Mbps)', hint: 'Instance → external' },
  { name: 'ingressBurstKb', label: 'Ingress burst (KB)', placeholder: 'automatic' },
  { name: 'egressBurstKb', label: 'Egress burst (KB)', placeholder: 'automatic' },
  { name: 'monthlyQuotaGb', label: 'Monthly quota (GB)', placeholder: 'none' },
  { name: 'throttleMbps', label: 'Throttle to (Mbps)' },
];

function optionalNumber(text: string): number | null {
  return text.trim() === '' ? null : Number(text);
}

/** The Bandwidth tab. */
export function BandwidthTab({ instance, refresh }: TabProps) {
  const current = instance.bandwidth.find((b) => b.nicId === null) ?? instance.bandwidth[0];
  const [form, setForm] = useState<Record<Field, string>>({
    ingressMbps: current?.ingressMbps?.toString() ?? '',
    egressMbps: current?.egressMbps?.toString() ?? '',
    ingressBurstKb: current && !current.burstAutomatic && current.ingressBurstBytes ? String(current.ingressBurstBytes / 1024) : '',
    egressBurstKb: current && !current.burstAutomatic && current.egressBurstBytes ? String(current.egressBurstBytes / 1024) : '',
    monthlyQuotaGb: current?.monthlyQuotaBytes ? String(current.monthlyQuotaBytes / 1e9) : '',
    quotaAction: current?.quotaAction ?? '',
    throttleMbps: current?.throttleMbps?.toString() ?? '',
  });
  const [state, submit] = useFormMutation(SetLimit, FIELDS);
  const [usage, reloadUsage] = useQuery({ query: UsageQuery, variables: { id: instance.id } });
  const period = usage.data?.instance?.traffic.period;
  const forget = useForgetStatus();
  const set = (name: Field) => (event: { target: { value: string } }) => setForm((f) => ({ ...f, [name]: event.target.value }));
  const save = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submit({
      input: {
        instanceId: instance.id,
        ingressMbps: optionalNumber(form.ingressMbps),
        egressMbps: optionalNumber(form.egressMbps),
        ingressBurstKb: optionalNumber(form.ingressBurstKb),
        egressBurstKb: optionalNumber(form.egressBurstKb),
        monthlyQuotaGb: optionalNumber(form.monthlyQuotaGb),
        quotaAction: form.quotaAction === '' ? null : (form.quotaAction as 'NOTIFY' | 'THROTTLE'),
        throttleMbps: optionalNumber(form.throttleMbps),
      },
    });
    if (payload) {
      forget(payload.limit.id);
      refresh();
      // a new quota changes the usage's share and state
      reloadUsage({ requestPolicy: 'network-only' });
    }
  };
  return (
    <form className="card" onSubmit={save} aria-labelledby="bandwidth-title" noValidate>
      <h2 id="bandwidth-title">Bandwidth</h2>
      {current && (
        <p>
          Current limit: <StatusBadge id={current.id} status={current.status} error={current.statusError} />
        </p>
      )}
      <section aria-labelledby="usage-title">
        <h3 id="usage-title">
          Traffic this period
          {period && (
            <small className="hint">
              {' '}
              {new Date(period.start).toLocaleDateString()} – {new Date(period.end).toLocaleDateString()}
            </small>
          )}
        </h3>
        {usage.error && <p className="form-error">{usage.error.message}</p>}
        {period ? <QuotaUsage period={period} throttleMbps={current?.throttleMbps} /> : !usage.error && <p>Loading…</p>}
      </section>
      <FormError errors={state.errors} />
      <div className="form-grid">
        {NUMBER_FIELDS.slice(0, 5).map(({ name, ...labels }) => (
          <TextField key={name} name={name} type="number" errors={state.errors} value={form[name]} onChange={set(name)} {...labels} />
        ))}
        <SelectField label="When the quota is used up" name="quotaAction" errors={state.errors} value={form.quotaAction} onChange={set('quotaAction')}>
          <option value="">—</option>
          <option value="NOTIFY">Notify</option>
          <option value="THROTTLE">Throttle</option>
        </SelectField>
        {NUMBER_FIELDS.slice(5).map(({ name, ...labels }) => (
          <TextField key={name} name={name} type="number" errors={state.errors} value={form[name]} onChange={set(name)} {...labels} />
        ))}
      </div>
      <div className="form-actions">
        <button type="submit" disabled={state.fetching}>
          Save limits
        </button>
      </div>
    </form>
  );
}
