/** Bandwidth shaping and monthly traffic quotas per instance or NIC. */
import { autoBurstBytes } from '../../net/shaping.js';
import type { BandwidthLimit } from '../../services/bandwidth-service.js';
import { CapabilityNotSupportedError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './apply-status.js';

const QuotaActionEnum = builder.enumType('TrafficQuotaAction', {
  description: 'What happens when the monthly traffic quota is exceeded.',
  values: {
    THROTTLE: { value: 'throttle', description: 'Cap the rate to throttleMbps until the month ends.' },
    NOTIFY: { value: 'notify', description: 'Only report it; the rate stays.' },
  } as const,
});

const mbps = (bps: number | null) => (bps === null ? null : bps / 1_000_000);

const BandwidthLimitRef = builder.objectRef<BandwidthLimit>('BandwidthLimit').implement({
  description:
    'A bandwidth limit of an instance or one NIC. Rates are stored in bits per second; the Mbit/s fields (1 Mbit/s = 10^6 bit/s) are the same values for people.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The limit id.' }),
    nicId: t.exposeID('nicId', { nullable: true, description: 'Null: applies to every NIC of the instance.' }),
    ingressBps: t.float({ nullable: true, description: 'Traffic into the instance, bits per second.', resolve: (l) => l.ingressBps }),
    egressBps: t.float({ nullable: true, description: 'Traffic out of the instance, bits per second.', resolve: (l) => l.egressBps }),
    ingressMbps: t.float({
      nullable: true,
      description: 'The ingress rate in Mbit/s (ingressBps / 10^6); null: not limited.',
      resolve: (l) => mbps(l.ingressBps),
    }),
    egressMbps: t.float({ nullable: true, description: 'The egress rate in Mbit/s (egressBps / 10^6); null: not limited.', resolve: (l) => mbps(l.egressBps) }),
    ingressBurstBytes: t.float({
      nullable: true,
      description:
        'Bytes that may pass at line rate before ingress shaping starts: as set, or the automatic burst (10 ms at the rate, at least 15000). Null: no ingress rate.',
      resolve: (l) => l.ingressBurstBytes ?? (l.ingressBps ? autoBurstBytes(l.ingressBps) : null),
    }),
    egressBurstBytes: t.float({
      nullable: true,
      description: 'As ingressBurstBytes, for egress. Null: no egress rate.',
      resolve: (l) => l.egressBurstBytes ?? (l.egressBps ? autoBurstBytes(l.egressBps) : null),
    }),
    burstAutomatic: t.boolean({
      description: 'True when neither burst was set, so both are computed from the rates.',
      resolve: (l) => l.ingressBurstBytes === null && l.egressBurstBytes === null,
    }),
    monthlyQuotaBytes: t.float({
      nullable: true,
      description: 'Traffic allowed per calendar month, bytes (monthlyQuotaGb × 10^9); null: no quota.',
      resolve: (l) => l.monthlyQuotaBytes,
    }),
    quotaAction: t.field({
      type: QuotaActionEnum,
      nullable: true,
      description: 'What happens beyond the quota; null: no quota.',
      resolve: (l) => l.quotaAction,
    }),
    throttleMbps: t.float({
      nullable: true,
      description: 'The rate beyond the quota (THROTTLE), Mbit/s; null otherwise.',
      resolve: (l) => mbps(l.throttleBps),
    }),
    status: t.field({ type: ApplyStatusEnum, description: 'Whether the limit is in effect on the host.', resolve: (l) => l.status }),
    statusError: t.exposeString('statusError', { nullable: true, description: "FAILED: the driver's error; null otherwise." }),
    changedRevision: t.exposeInt('changedRevision', {
      description: "The host's desired revision in which this was created or last changed; status reports for older revisions do not apply to it.",
    }),
  }),
});

builder.objectField(InstanceRef, 'bandwidth', (t) =>
  t.field({
    type: [BandwidthLimitRef],
    description: 'The instance-wide limit first, then per-NIC limits.',
    resolve: (i, _a, ctx) => ctx.services.bandwidth.limitsOf(requireActor(ctx), i),
  }),
);

const SetBandwidthLimitInput = builder.inputType('SetBandwidthLimitInput', {
  description:
    'States the whole limit: fields left out are cleared. At least one of ingressMbps, egressMbps or monthlyQuotaGb. Rates in Mbit/s (10^6 bit/s), from 0.008 to 100000.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    nicId: t.id({ description: 'One NIC of the instance. Absent: the whole instance.' }),
    ingressMbps: t.float({ description: 'Into the instance, Mbit/s, e.g. 100 or 0.5. Absent: not limited.' }),
    egressMbps: t.float({ description: 'Out of the instance, Mbit/s. Absent: not limited.' }),
    ingressBurstKb: t.int({ description: 'KB (1000 bytes), 2-1000000; needs ingressMbps. Absent: automatic (10 ms at the rate, at least 15 KB).' }),
    egressBurstKb: t.int({ description: 'KB (1000 bytes), 2-1000000; needs egressMbps. Absent: automatic.' }),
    monthlyQuotaGb: t.float({ description: 'Traffic per calendar month, GB (10^9 bytes), 0.001 to 10000000. Needs quotaAction.' }),
    quotaAction: t.field({ type: QuotaActionEnum, description: 'Required with monthlyQuotaGb: THROTTLE or NOTIFY.' }),
    throttleMbps: t.float({ description: 'The rate once the quota is exceeded, Mbit/s; required for THROTTLE, refused otherwise.' }),
  }),
});

const RemoveBandwidthLimitInput = builder.inputType('RemoveBandwidthLimitInput', {
  description: 'Which limit to remove.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    nicId: t.id({ description: "A NIC's limit. Absent: the instance-wide limit." }),
  }),
});

builder.mutationFields((t) => ({
  setBandwidthLimit: t.field({
    type: BandwidthLimitRef,
    description: 'Creates or replaces the limit of an instance or one of its NICs.',
    args: { input: t.arg({ type: SetBandwidthLimitInput, required: true, description: 'The whole limit.' }) },
    errors: resultOf('SetBandwidthLimit', 'limit', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.bandwidth.set(requireActor(ctx), input),
  }),
  removeBandwidthLimit: t.field({
    type: BandwidthLimitRef,
    nullable: true,
    description: 'Removes the limit; answers null (and changes nothing) when there was none.',
    args: { input: t.arg({ type: RemoveBandwidthLimitInput, required: true, description: 'The instance or NIC.' }) },
    errors: resultOf('RemoveBandwidthLimit', 'limit', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.bandwidth.remove(requireActor(ctx), input),
  }),
}));
