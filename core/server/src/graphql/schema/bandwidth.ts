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
  description: 'THROTTLE: cap the rate to throttleMbps until the month ends. NOTIFY: only report it.',
  values: { THROTTLE: { value: 'throttle' }, NOTIFY: { value: 'notify' } } as const,
});

const mbps = (bps: number | null) => (bps === null ? null : bps / 1_000_000);

const BandwidthLimitRef = builder.objectRef<BandwidthLimit>('BandwidthLimit').implement({
  description: 'Rates are stored in bits per second; the Mbit/s fields are the same values for people.',
  fields: (t) => ({
    id: t.exposeID('id'),
    nicId: t.exposeID('nicId', { nullable: true, description: 'Null: applies to every NIC of the instance.' }),
    ingressBps: t.float({ nullable: true, description: 'Traffic into the instance, bits per second.', resolve: (l) => l.ingressBps }),
    egressBps: t.float({ nullable: true, description: 'Traffic out of the instance, bits per second.', resolve: (l) => l.egressBps }),
    ingressMbps: t.float({ nullable: true, resolve: (l) => mbps(l.ingressBps) }),
    egressMbps: t.float({ nullable: true, resolve: (l) => mbps(l.egressBps) }),
    ingressBurstBytes: t.float({
      nullable: true,
      description: 'As set, or the automatic burst.',
      resolve: (l) => l.ingressBurstBytes ?? (l.ingressBps ? autoBurstBytes(l.ingressBps) : null),
    }),
    egressBurstBytes: t.float({ nullable: true, resolve: (l) => l.egressBurstBytes ?? (l.egressBps ? autoBurstBytes(l.egressBps) : null) }),
    burstAutomatic: t.boolean({ resolve: (l) => l.ingressBurstBytes === null && l.egressBurstBytes === null }),
    monthlyQuotaBytes: t.float({ nullable: true, resolve: (l) => l.monthlyQuotaBytes }),
    quotaAction: t.field({ type: QuotaActionEnum, nullable: true, resolve: (l) => l.quotaAction }),
    throttleMbps: t.float({ nullable: true, resolve: (l) => mbps(l.throttleBps) }),
    status: t.field({ type: ApplyStatusEnum, resolve: (l) => l.status }),
    statusError: t.exposeString('statusError', { nullable: true }),
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
  description: 'States the whole limit: fields left out are cleared.',
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    nicId: t.id({ description: 'Absent: the whole instance.' }),
    ingressMbps: t.float({ description: 'Into the instance, Mbit/s.' }),
    egressMbps: t.float({ description: 'Out of the instance, Mbit/s.' }),
    ingressBurstKb: t.int({ description: 'Absent: automatic (10 ms at the rate, at least 15 KB).' }),
    egressBurstKb: t.int({ description: 'Absent: automatic.' }),
    monthlyQuotaGb: t.float({ description: 'Traffic per calendar month, GB (10^9 bytes).' }),
    quotaAction: t.field({ type: QuotaActionEnum }),
    throttleMbps: t.float({ description: 'The rate once the quota is exceeded (THROTTLE).' }),
  }),
});

const RemoveBandwidthLimitInput = builder.inputType('RemoveBandwidthLimitInput', {
  fields: (t) => ({ instanceId: t.id({ required: true }), nicId: t.id() }),
});

builder.mutationFields((t) => ({
  setBandwidthLimit: t.field({
    type: BandwidthLimitRef,
    args: { input: t.arg({ type: SetBandwidthLimitInput, required: true }) },
    errors: resultOf('SetBandwidthLimit', 'limit', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.bandwidth.set(requireActor(ctx), input),
  }),
  removeBandwidthLimit: t.field({
    type: BandwidthLimitRef,
    nullable: true,
    description: 'Removes the limit; answers null (and changes nothing) when there was none.',
    args: { input: t.arg({ type: RemoveBandwidthLimitInput, required: true }) },
    errors: resultOf('RemoveBandwidthLimit', 'limit', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.bandwidth.remove(requireActor(ctx), input),
  }),
}));
