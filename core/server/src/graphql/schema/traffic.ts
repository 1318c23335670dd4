/**
 * Traffic statistics: `traffic` on instances, NICs, port forwards and hosts (live rate, history
 * curve, billing-period totals), the live `trafficUpdated` feed, and agents' `reportTraffic`.
 */
import type { ReportTrafficInput as ReportTrafficWire, TrafficRejection } from '@gatehouse/agent-protocol';
import { isAdmin } from '../../auth/actor.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { type TrafficPeriodTotals, type TrafficPoint, type TrafficSubject } from '../../traffic/traffic-history.js';
import type { LiveRate, TrafficUpdate } from '../../traffic/traffic-live.js';
import type { TrafficReportResult } from '../../traffic/traffic-ingest.js';
import type { TrafficQuotaChange } from '../../events/event-payloads.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { HostRef } from './hosts.js';
import { InstanceRef, NicRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { PortForwardRef } from './port-forwards.js';

const TrafficRangeEnum = builder.enumType('TrafficRange', {
  description: 'A history window ending now, and the step of its points.',
  values: {
    LAST_24H: { description: '288 points, one per 5 minutes.' },
    LAST_30D: { description: '30 points, one per day (UTC).' },
    LAST_7D: { description: '168 points, one per hour.' },
    LAST_HOUR: { description: '60 points, one per minute.' },
  } as const,
});

const TrafficLiveRef = builder.objectRef<LiveRate>('TrafficLive').implement({
  description: 'The rate over the last reported interval (normally 1 second), counted on the host side.',
  fields: (t) => ({
    rxBps: t.exposeFloat('rxBps', { description: 'Into the instance (for a forward: towards it; for a host: into its instances), bits per second.' }),
    txBps: t.exposeFloat('txBps', { description: 'Out of the instance (0 for a forward), bits per second.' }),
    at: t.expose('at', { type: 'DateTime', description: 'When the agent read the counters this rate ends at.' }),
  }),
});

const TrafficPointRef = builder.objectRef<TrafficPoint>('TrafficPoint').implement({
  description: 'The traffic of one step of a history curve.',
  fields: (t) => ({
    at: t.expose('at', { type: 'DateTime', description: 'Start of the step (UTC).' }),
    rxBytes: t.exposeFloat('rxBytes', { description: 'Bytes into the instance during the step.' }),
    txBytes: t.exposeFloat('txBytes', { description: 'Bytes out of the instance during the step.' }),
    rxBps: t.float({ description: 'Average rate into the instance over the step, bits per second.', resolve: (p) => (p.rxBytes * 8) / p.stepSeconds }),
    txBps: t.float({ description: 'Average rate out of the instance over the step, bits per second.', resolve: (p) => (p.txBytes * 8) / p.stepSeconds }),
  }),
});

const TrafficQuotaStateEnum = builder.enumType('TrafficQuotaState', {
  description: 'Where a monthly traffic quota stands in its billing period.',
  values: {
    EXCEEDED: { value: 'exceeded', description: '100 % of the quota used: THROTTLE caps the rate until the period ends; NOTIFY only says so.' },
    NORMAL: { value: 'normal', description: 'Below 80 % of the quota.' },
    WARNING: { value: 'warning', description: '80 % of the quota used.' },
  } as const,
});

const TrafficPeriodRef = builder.objectRef<TrafficPeriodTotals>('TrafficPeriod').implement({
  description: 'Traffic of one billing period of the owner (calendar months unless the user has a billing day; hosts: calendar months), UTC.',
  fields: (t) => ({
    start: t.expose('start', { type: 'DateTime', description: 'First instant of the period.' }),
    end: t.expose('end', { type: 'DateTime', description: 'First instant after the period.' }),
    rxBytes: t.exposeFloat('rxBytes', { description: 'Bytes into the instance in the period so far.' }),
    txBytes: t.exposeFloat('txBytes', { description: 'Bytes out of the instance in the period so far.' }),
    totalBytes: t.float({ description: 'Both directions, rxBytes + txBytes: what a monthly quota counts.', resolve: (p) => p.rxBytes + p.txBytes }),
    rxP95Bps: t.exposeFloat('rxP95Bps', {
      description:
        '95th percentile of the 5-minute average rates into the instance over the period so far (5-minute intervals without traffic count as 0), bits per second.',
    }),
    txP95Bps: t.exposeFloat('txP95Bps', { description: 'The same, out of the instance, bits per second.' }),
    p95Bps: t.float({
      description: 'The greater of rxP95Bps and txP95Bps, bits per second: what transit is usually billed on.',
      resolve: (p) => Math.max(p.rxP95Bps, p.txP95Bps),
    }),
    quotaBytes: t.float({
      nullable: true,
      description: "The monthly traffic quota (bytes, rx + tx) of the instance's bandwidth limit (a NIC's: its own limit); null: none.",
      resolve: (p) => p.quotaBytes,
    }),
    quotaUsed: t.float({
      nullable: true,
      description: 'The share used: totalBytes / quotaBytes (1 = the whole quota used; above 1 when exceeded); null without a quota.',
      resolve: (p) => (p.quotaBytes ? (p.rxBytes + p.txBytes) / p.quotaBytes : null),
    }),
    quotaState: t.field({
      type: TrafficQuotaStateEnum,
      nullable: true,
      description:
        'Where the quota stands in the current period: NORMAL, WARNING (80 % used) or EXCEEDED (100 %; THROTTLE then caps the rate). Null without a quota and for earlier periods.',
      resolve: async (p, _a, ctx) => (p.quotaLimitId ? (await ctx.services.trafficQuota.standing(p.quotaLimitId)).level : null),
    }),
    throttled: t.boolean({
      description:
        "Whether the quota's throttle rate is in force now (THROTTLE and exceeded): true until it is lifted, which happens within seconds of the next period's start (the next traffic report or the 10 s check), in the same change that gives the host its configured rate back.",
      resolve: async (p, _a, ctx) => (p.quotaLimitId ? (await ctx.services.trafficQuota.standing(p.quotaLimitId)).throttled : false),
    }),
    projectedTotalBytes: t.float({
      description: 'The total extrapolated linearly to the end of the period at the average rate so far, bytes (equals totalBytes for a finished period).',
      resolve: (p) => {
        const elapsed = p.asOf.getTime() - p.start.getTime();
        const total = p.rxBytes + p.txBytes;
        return elapsed <= 0 ? total : Math.round((total * (p.end.getTime() - p.start.getTime())) / elapsed);
      },
    }),
  }),
});

const TrafficRef = builder.objectRef<TrafficSubject>('Traffic').implement({
  description:
    'Traffic counted on the host side (veth/tap interfaces and nftables counters), never inside the guest. rx is traffic into the instance, tx out of it.',
  fields: (t) => ({
    live: t.field({
      type: TrafficLiveRef,
      nullable: true,
      description: "The newest rate; null when the host's agent reported none in the last 10 seconds.",
      resolve: (s, _a, ctx) => ctx.services.trafficLive.rate(s.id),
    }),
    history: t.field({
      type: [TrafficPointRef],
      description: 'Traffic per step over a window ending now; steps without traffic are 0.',
      args: { range: t.arg({ type: TrafficRangeEnum, required: true, description: 'The window: LAST_HOUR, LAST_24H, LAST_7D or LAST_30D.' }) },
      resolve: (s, { range }, ctx) => ctx.services.trafficHistory.history(s, range),
    }),
    period: t.field({
      type: TrafficPeriodRef,
      description: 'Totals of the current billing period (offset 0) or of an earlier one (offset 1: the previous period).',
      args: { offset: t.arg.int({ defaultValue: 0, description: 'Periods back from the current one, 0-120.' }) },
      resolve: (s, { offset }, ctx) => {
        const back = offset ?? 0;
        if (!Number.isInteger(back) || back < 0 || back > 120) throw new ValidationError('offset', back, 'must be an integer from 0 to 120');
        return ctx.services.trafficHistory.period(s, back);
      },
    }),
  }),
});

builder.objectField(InstanceRef, 'traffic', (t) =>
  t.field({ type: TrafficRef, description: 'Traffic of all NICs of the instance.', resolve: (i): TrafficSubject => ({ kind: 'instance', id: i.id }) }),
);
builder.objectField(NicRef, 'traffic', (t) =>
  t.field({ type: TrafficRef, description: 'Traffic of this NIC.', resolve: (n): TrafficSubject => ({ kind: 'nic', id: n.id }) }),
);
builder.objectField(PortForwardRef, 'traffic', (t) =>
  t.field({
    type: TrafficRef,
    description:
      "Traffic towards the forward (packets arriving on its host ports, counted before DNAT) as rx; tx stays 0 (the replies are counted on the instance's NIC).",
    resolve: (f): TrafficSubject => ({ kind: 'port_forward', id: f.id }),
  }),
);
builder.objectField(HostRef, 'traffic', (t) =>
  t.field({
    type: TrafficRef,
    description: 'Traffic of all instance NICs on the host (admins only).',
    resolve: (h, _a, ctx): TrafficSubject => {
      if (!isAdmin(requireActor(ctx))) throw new ForbiddenError(`Host.traffic of host ${h.id} is for admins`, 'hostId', h.id);
      return { kind: 'host', id: h.id };
    },
  }),
);

const InstanceTrafficRateRef = builder.objectRef<TrafficUpdate['instances'][number]>('InstanceTrafficRate').implement({
  description: "One instance's rate over the interval.",
  fields: (t) => ({
    instanceId: t.exposeID('instanceId', { description: 'The instance.' }),
    rxBps: t.exposeFloat('rxBps', { description: 'Into the instance, bits per second.' }),
    txBps: t.exposeFloat('txBps', { description: 'Out of the instance, bits per second.' }),
  }),
});

const TrafficUpdateRef = builder.objectRef<TrafficUpdate>('TrafficUpdate').implement({
  description: "Live rates of one host's instances for one interval of its agent.",
  fields: (t) => ({
    hostId: t.exposeID('hostId', { description: 'The host whose agent reported.' }),
    at: t.expose('at', { type: 'DateTime', description: 'When the agent read the counters.' }),
    intervalMs: t.exposeInt('intervalMs', { description: 'The interval the rates are averaged over, milliseconds.' }),
    instances: t.field({
      type: [InstanceTrafficRateRef],
      description: 'The instances you may see that had a reading in the interval.',
      resolve: (u) => u.instances,
    }),
    host: t.field({
      type: TrafficLiveRef,
      nullable: true,
      description: "The host's total rate (admins without instanceIds only; null otherwise).",
      resolve: (u) => u.host,
    }),
  }),
});

builder.subscriptionField('trafficUpdated', (t) =>
  t.field({
    type: TrafficUpdateRef,
    description:
      'Live rates, one message per host and agent interval (normally every second; a host with many instances sends an interval in several messages): your own instances (admins: all). Ids of instances you may not see give nothing.',
    args: {
      instanceIds: t.arg.idList({ description: 'Only these instances (at most 1000); absent: all you may see.' }),
      hostId: t.arg.id({ description: 'Only instances on this host; absent: every host.' }),
    },
    subscribe: (_r, args, ctx) => {
      const actor = requireActor(ctx);
      const ids = args.instanceIds?.map(String) ?? null;
      if (ids && ids.length > 1000) throw new ValidationError('instanceIds', `${ids.length} ids`, 'holds more than 1000 ids');
      return ctx.services.trafficLive.watch(actor, { instanceIds: ids, hostId: args.hostId ? String(args.hostId) : null });
    },
    resolve: (update) => update,
  }),
);

const NicTrafficInput = builder.inputType('NicTrafficInput', {
  description: "One instance NIC's raw cumulative counters (rx: into the instance).",
  fields: (t) => ({
    nicId: t.id({ required: true, description: 'The NIC (Nic.id) of an instance on this host.' }),
    epoch: t.string({ required: true, description: 'One life of the counter (the host-side interface\'s ifindex, e.g. "if7"), 1-200 characters.' }),
    rxBytes: t.float({ required: true, description: 'Bytes into the instance since the counter started (a non-negative integer).' }),
    rxPackets: t.float({ required: true, description: 'Packets into the instance since the counter started.' }),
    txBytes: t.float({ required: true, description: 'Bytes out of the instance since the counter started.' }),
    txPackets: t.float({ required: true, description: 'Packets out of the instance since the counter started.' }),
  }),
});

const NicTrafficReadingInput = builder.inputType('NicTrafficReadingInput', {
  description: 'One reading of every instance NIC counter of the host.',
  fields: (t) => ({
    at: t.string({ required: true, description: 'When the counters were read, ISO 8601; at most 60 s ahead of the controller.' }),
    intervalMs: t.int({ required: true, description: 'Milliseconds since the previous reading (1-3,600,000).' }),
    counters: t.field({ type: [NicTrafficInput], required: true, description: 'At most 20,000.' }),
  }),
});

const ForwardTrafficInput = builder.inputType('ForwardTrafficInput', {
  description: "One port forward's raw cumulative counter (packets arriving on its host ports).",
  fields: (t) => ({
    forwardId: t.id({ required: true, description: 'The port forward (PortForward.id) on this host.' }),
    epoch: t.string({ required: true, description: 'One life of the counter (the handles of the nft table and sets holding it), 1-200 characters.' }),
    bytes: t.float({ required: true, description: 'Bytes since the counter started (a non-negative integer).' }),
    packets: t.float({ required: true, description: 'Packets since the counter started.' }),
    rateLimited: t.float({
      description:
        'For a forward with a rate limit: new connections its limits refused since the counter started (same epoch; a smaller value: it restarted). Absent for forwards without one.',
    }),
  }),
});

const ForwardTrafficReadingInput = builder.inputType('ForwardTrafficReadingInput', {
  description: 'One reading of every port forward counter of the host.',
  fields: (t) => ({
    at: t.string({ required: true, description: 'When the counters were read, ISO 8601; at most 60 s ahead of the controller.' }),
    intervalMs: t.int({
      required: true,
      description: 'Milliseconds since the previous forward reading: longer than the NIC interval when reading the forwards takes longer.',
    }),
    counters: t.field({ type: [ForwardTrafficInput], required: true, description: 'At most 100,000.' }),
  }),
});

const ReportTrafficInput = builder.inputType('ReportTrafficInput', {
  description: "A host agent's traffic report: raw cumulative counters, batched per host per interval.",
  fields: (t) => ({
    hostId: t.id({ required: true, description: "The reporting agent's host." }),
    bootId: t.string({ required: true, description: 'The host\'s boot id (part of every counter\'s epoch), 1-64 letters, digits or "-".' }),
    sequence: t.float({
      required: true,
      description: "Grows with every report of the host, also across agent restarts; a reading with a sequence not above the object's last one adds nothing.",
    }),
    nics: t.field({ type: NicTrafficReadingInput, required: true, description: 'The NIC counters, read every interval.' }),
    forwards: t.field({ type: ForwardTrafficReadingInput, description: 'Absent when no forward reading finished since the last report.' }),
  }),
});

const TrafficRejectionRef = builder.objectRef<TrafficRejection>('TrafficRejection').implement({
  description: 'A counter of a report that was not counted (the others were).',
  fields: (t) => ({
    field: t.exposeString('field', { description: 'Path of the counter in the input, e.g. "input.nics.counters[3].rxBytes".' }),
    value: t.exposeString('value', { description: 'The value that was sent.' }),
    message: t.exposeString('message', { description: 'Why it was not counted.' }),
  }),
});

const ReportTrafficOutcomeRef = builder.objectRef<TrafficReportResult>('ReportTrafficOutcome').implement({
  description: 'What a traffic report did.',
  fields: (t) => ({
    counted: t.exposeInt('counted', { description: 'Counters taken (replays among them add nothing).' }),
    rejected: t.field({ type: [TrafficRejectionRef], description: 'Counters left out, each with the field it is at.', resolve: (r) => r.rejected }),
  }),
});

builder.mutationField('reportTraffic', (t) =>
  t.field({
    type: ReportTrafficOutcomeRef,
    description:
      "For host agents: the host's raw cumulative traffic counters, once per interval. The controller computes the deltas (replays add 0, a smaller value or a new epoch is a reset, impossible deltas are discarded). The host's AGENT token or an admin.",
    args: { input: t.arg({ type: ReportTrafficInput, required: true, description: 'The report.' }) },
    errors: resultOf('ReportTraffic', 'outcome', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.trafficIngest.report(requireActor(ctx, { allowAgent: true }), input as unknown as ReportTrafficWire),
  }),
);

const TrafficQuotaChangeRef = builder.objectRef<TrafficQuotaChange>('TrafficQuotaChange').implement({
  description:
    'A monthly traffic quota changed level: 80 % reached, 100 % reached (THROTTLE: the throttle is put in force), or back to normal (a new billing period or a raised quota; a throttle is lifted).',
  fields: (t) => ({
    limitId: t.exposeID('limitId', { description: 'The bandwidth limit (BandwidthLimit.id) holding the quota.' }),
    instanceId: t.exposeID('instanceId', { description: 'Its instance.' }),
    nicId: t.exposeID('nicId', { nullable: true, description: 'The NIC of a per-NIC limit; null: the instance-wide limit.' }),
    level: t.field({ type: TrafficQuotaStateEnum, description: 'The level now.', resolve: (c) => c.level }),
    previousLevel: t.field({ type: TrafficQuotaStateEnum, description: 'The level before.', resolve: (c) => c.previousLevel }),
    throttled: t.exposeBoolean('throttled', { description: 'Whether the throttle rate is in force now.' }),
    throttleMbps: t.float({
      nullable: true,
      description: 'The rate in force while throttled, Mbit/s (both directions, every NIC the limit covers); null when not throttled.',
      resolve: (c) => (c.throttleBps === null ? null : c.throttleBps / 1e6),
    }),
    usedBytes: t.exposeFloat('usedBytes', { description: 'The billing-period total (rx + tx) when the level changed, bytes.' }),
    quotaBytes: t.exposeFloat('quotaBytes', { description: 'The quota, bytes (0: the quota was removed).' }),
    periodStart: t.field({ type: 'DateTime', description: 'Start of the billing period.', resolve: (c) => new Date(c.periodStart) }),
    periodEnd: t.field({ type: 'DateTime', description: 'End of the billing period (when a throttle is lifted).', resolve: (c) => new Date(c.periodEnd) }),
    at: t.field({ type: 'DateTime', description: 'When the change was made.', resolve: (c) => new Date(c.at) }),
  }),
});

builder.subscriptionField('trafficQuotaChanged', (t) =>
  t.field({
    type: TrafficQuotaChangeRef,
    description: 'Monthly traffic quota changes of your own instances (admins: all), as they happen. Ids of instances you may not see give nothing.',
    args: { instanceIds: t.arg.idList({ description: 'Only these instances (at most 1000); absent: all you may see.' }) },
    subscribe: (_r, args, ctx) => {
      const actor = requireActor(ctx);
      const ids = args.instanceIds?.map(String) ?? null;
      if (ids && ids.length > 1000) throw new ValidationError('instanceIds', `${ids.length} ids`, 'holds more than 1000 ids');
      return ctx.services.trafficQuota.watch(actor, ids);
    },
    resolve: (change) => change,
  }),
);
