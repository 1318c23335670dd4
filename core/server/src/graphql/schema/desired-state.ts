/** For host agents: their host's desired state (query and live subscription) and status reports; for owners: status changes. */
import { STATUS_OBJECT_TYPES, type DesiredStateMessage, type StatusObjectType } from '@gatehouse/agent-protocol';
import type { DesiredState } from '@gatehouse/sdk';
import type { ObjectStatusChange } from '../../events/event-payloads.js';
import type { ObjectStatusReportResult } from '../../services/object-status-service.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './apply-status.js';

const DesiredStateRef = builder.objectRef<DesiredState>('DesiredStateDocument').implement({
  description: 'The document an agent applies; its shape is `DesiredState` in @gatehouse/sdk.',
  fields: (t) => ({
    hostId: t.exposeID('hostId', { description: 'The host it is for.' }),
    revision: t.exposeInt('revision', { description: "The host's desired revision this document is." }),
    apiVersion: t.exposeInt('apiVersion', { description: 'The driver API version of the document format.' }),
    document: t.field({ type: 'JSON', description: 'The whole document (`DesiredState`).', resolve: (d) => d }),
  }),
});

builder.queryField('hostDesiredState', (t) =>
  t.field({
    type: DesiredStateRef,
    description: "The host's desired state now (admins, or the host's AGENT token).",
    args: { hostId: t.arg.id({ required: true, description: 'The host.' }) },
    resolve: (_r, args, ctx) => ctx.services.desiredState.get(requireActor(ctx, { allowAgent: true }), args.hostId),
  }),
);

builder.subscriptionField('hostDesiredState', (t) =>
  t.field({
    type: DesiredStateRef,
    description:
      "The full desired state, then each newer revision as it commits. While the host's AGENT token holds this subscription (on any replica), the host's agent counts as online (Host.agent).",
    args: { hostId: t.arg.id({ required: true, description: 'The host.' }) },
    subscribe: (_r, args, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      // the stream authorizes first: a refused subscription never marks the agent connected
      return ctx.services.hostAgents.track(actor, args.hostId, ctx.services.desiredState.stream(actor, args.hostId));
    },
    resolve: (state) => state,
  }),
);

type DesiredStateChange = DesiredStateMessage & { hostId: string; revision: number; apiVersion: number };

const DesiredStateChangeRef = builder.objectRef<DesiredStateChange>('DesiredStateChange').implement({
  description: 'One message of `hostDesiredStateChanges`: the full document first, then a patch per revision.',
  fields: (t) => ({
    hostId: t.exposeID('hostId', { description: 'The host it is for.' }),
    revision: t.exposeInt('revision', { description: 'The desired revision after this message.' }),
    apiVersion: t.exposeInt('apiVersion', { description: 'The driver API version of the document format.' }),
    full: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The whole document (`DesiredState`); on the first message only.',
      resolve: (c) => c.full ?? null,
    }),
    patch: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The difference from the previous message (`DesiredStatePatch` in @gatehouse/agent-protocol, applied with `applyDesiredStatePatch`).',
      resolve: (c) => c.patch ?? null,
    }),
  }),
});

builder.subscriptionField('hostDesiredStateChanges', (t) =>
  t.field({
    type: DesiredStateChangeRef,
    description:
      "What host agents subscribe to: the full desired state, then each newer revision as a patch from the previous message. Holding it with the host's AGENT token marks the agent online, as `hostDesiredState` does.",
    args: { hostId: t.arg.id({ required: true, description: 'The host.' }) },
    subscribe: (_r, args, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      return ctx.services.hostAgents.track(actor, args.hostId, ctx.services.desiredState.changes(actor, args.hostId));
    },
    resolve: (change) => change,
  }),
);

const STATUS_OBJECT_DESCRIPTIONS: Record<StatusObjectType, string> = {
  port_forward: 'A port forward (PortForward).',
  firewall_rule: 'A firewall rule (FirewallRule).',
  bandwidth_limit: 'A bandwidth limit (BandwidthLimit).',
  nic: 'A NIC (Nic).',
};

// the protocol's names, so that a kind added there is one here (and the agent's documents validate)
const ObjectTypeEnum = builder.enumType('StatusObjectType', {
  description: 'Kinds of objects a host agent reports a status for.',
  values: Object.fromEntries(
    Object.entries(STATUS_OBJECT_TYPES).map(([value, name]) => [
      name,
      { value: value as StatusObjectType, description: STATUS_OBJECT_DESCRIPTIONS[value as StatusObjectType] },
    ]),
  ) as {
    [K in StatusObjectType as (typeof STATUS_OBJECT_TYPES)[K]]: { value: K; description: string };
  },
});

const ChangeObjectTypeEnum = builder.enumType('ObjectStatusChangeType', {
  description: 'Kinds of objects whose apply status changes are published.',
  values: {
    PORT_FORWARD: { value: 'port_forward', description: 'A port forward (PortForward).' },
    FIREWALL_RULE: { value: 'firewall_rule', description: 'A firewall rule (FirewallRule).' },
    BANDWIDTH_LIMIT: { value: 'bandwidth_limit', description: 'A bandwidth limit (BandwidthLimit).' },
    NIC: { value: 'nic', description: 'A NIC (Nic).' },
    WEB_PROXY: { value: 'web_proxy', description: 'Applied by the controller to Caddy; revision is 0.' },
  } as const,
});

const ObjectStatusChangeRef = builder.objectRef<ObjectStatusChange>('ObjectStatusChange').implement({
  description: "An object's apply status changed on its host.",
  fields: (t) => ({
    objectType: t.field({ type: ChangeObjectTypeEnum, description: 'What kind of object.', resolve: (c) => c.objectType }),
    objectId: t.exposeID('objectId', { description: 'Its id.' }),
    hostId: t.exposeID('hostId', { description: 'The host it is on.' }),
    status: t.field({ type: ApplyStatusEnum, description: 'Its new status.', resolve: (c) => c.status }),
    error: t.exposeString('error', { nullable: true, description: "FAILED: the driver's error; null otherwise." }),
    revision: t.exposeInt('revision', { description: 'The desired-state revision the agent applied.' }),
  }),
});

const ObjectStatusInput = builder.inputType('ObjectStatusInput', {
  description: "One object's status in an agent's report.",
  fields: (t) => ({
    objectType: t.field({ type: ObjectTypeEnum, required: true, description: 'What kind of object.' }),
    objectId: t.id({ required: true, description: 'Its id, as in the desired state.' }),
    status: t.field({ type: ApplyStatusEnum, required: true, description: 'Its status on the host.' }),
    error: t.string({ description: "FAILED only: the driver's error, at most 2000 characters." }),
  }),
});

const ReportObjectStatusInput = builder.inputType('ReportObjectStatusInput', {
  description: "An agent's report of object statuses after an apply.",
  fields: (t) => ({
    hostId: t.id({ required: true, description: "The agent's host." }),
    revision: t.int({
      required: true,
      description:
        'The desired-state revision these statuses are for. Objects changed in a later revision are skipped (they stay PENDING until that revision is reported).',
    }),
    objects: t.field({ type: [ObjectStatusInput], required: true, description: 'At most 10000; send several reports for more.' }),
  }),
});

const StaleObjectRef = builder.objectRef<ObjectStatusReportResult['stale'][number]>('StaleObjectStatus').implement({
  description: 'An object a report skipped: it changed after the reported revision.',
  fields: (t) => ({
    objectType: t.field({ type: ObjectTypeEnum, description: 'What kind of object.', resolve: (o) => o.objectType }),
    objectId: t.exposeID('objectId', { description: 'Its id.' }),
  }),
});

const ReportedRef = builder.objectRef<ObjectStatusReportResult>('ReportedObjectStatus').implement({
  description: 'What a status report recorded.',
  fields: (t) => ({
    changes: t.field({ type: [ObjectStatusChangeRef], description: 'The statuses that changed.', resolve: (r) => r.changes }),
    stale: t.field({
      type: [StaleObjectRef],
      description: 'Objects not recorded because they changed after the reported revision; report them again for that revision.',
      resolve: (r) => r.stale,
    }),
  }),
});

builder.mutationField('reportObjectStatus', (t) =>
  t.field({
    type: ReportedRef,
    description: 'For host agents: the apply status of objects on their host.',
    args: { input: t.arg({ type: ReportObjectStatusInput, required: true, description: 'The report.' }) },
    errors: resultOf('ReportObjectStatus', 'reported', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.objectStatus.report(requireActor(ctx, { allowAgent: true }), input),
  }),
);

builder.subscriptionField('objectStatusChanged', (t) =>
  t.field({
    type: ObjectStatusChangeRef,
    description: 'Status changes of your own objects (admins: all) as agents report them.',
    subscribe: (_r, _a, ctx) => ctx.services.objectStatus.watch(requireActor(ctx)),
    resolve: (change) => change,
  }),
);
