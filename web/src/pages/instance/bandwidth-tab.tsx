/** Bandwidth limits of an instance: ingress/egress caps, burst, monthly quota and its action. */
import { useState, type FormEvent } from 'react';
import { FormError, SelectField, TextField } from '../../components/form.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { StatusBadge, useForgetStatus } from '../../live-status.js';
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

const FIELDS = ['ingressMbps', 'egressMbps', 'ingressBurstKb', 'egressBurstKb', 'monthlyQuotaGb', 'quotaAction', 'throttleMbps'] as const;
type Field = (typeof FIELDS)[number];

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
      <FormError errors={state.errors} />
      <div className="form-grid">
        <TextField
          label="Ingress limit (Mbps)"
          name="ingressMbps"
          type="number"
          errors={state.errors}
          value={form.ingressMbps}
          onChange={set('ingressMbps')}
          hint="External → instance; empty: none"
        />
        <TextField
          label="Egress limit (Mbps)"
          name="egressMbps"
          type="number"
          errors={state.errors}
          value={form.egressMbps}
          onChange={set('egressMbps')}
          hint="Instance → external"
        />
        <TextField
          label="Ingress burst (KB)"
          name="ingressBurstKb"
          type="number"
          errors={state.errors}
          value={form.ingressBurstKb}
          onChange={set('ingressBurstKb')}
          placeholder="automatic"
        />
        <TextField
          label="Egress burst (KB)"
          name="egressBurstKb"
          type="number"
          errors={state.errors}
          value={form.egressBurstKb}
          onChange={set('egressBurstKb')}
          placeholder="automatic"
        />
        <TextField
          label="Monthly quota (GB)"
          name="monthlyQuotaGb"
          type="number"
          errors={state.errors}
          value={form.monthlyQuotaGb}
          onChange={set('monthlyQuotaGb')}
          placeholder="none"
        />
        <SelectField label="When the quota is used up" name="quotaAction" errors={state.errors} value={form.quotaAction} onChange={set('quotaAction')}>
          <option value="">—</option>
          <option value="NOTIFY">Notify</option>
          <option value="THROTTLE">Throttle</option>
        </SelectField>
        <TextField
          label="Throttle to (Mbps)"
          name="throttleMbps"
          type="number"
          errors={state.errors}
          value={form.throttleMbps}
          onChange={set('throttleMbps')}
        />
      </div>
      <div className="form-actions">
        <button type="submit" disabled={state.fetching}>
          Save limits
        </button>
      </div>
    </form>
  );
}
