/** For host agents: their host's desired state (query and live subscription) and status reports; for owners: status changes. */
import type { DesiredState } from '@gatehouse/sdk';
import type { ObjectStatusChange } from '../../services/object-status-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './port-forwards.js';

const DesiredStateRef = builder.objectRef<DesiredState>('DesiredStateDocument').implement({
  description: 'The document an agent applies; its shape is `DesiredState` in @gatehouse/sdk.',
  fields: (t) => ({
    hostId: t.exposeID('hostId'),
    revision: t.exposeInt('revision'),
    apiVersion: t.exposeInt('apiVersion'),
    document: t.field({ type: 'JSON', resolve: (d) => d }),
  }),
});

builder.queryField('hostDesiredState', (t) =>
  t.field({
    type: DesiredStateRef,
    description: "The host's desired state now (admins, or the host's AGENT token).",
    args: { hostId: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.desiredState.get(requireActor(ctx, { allowAgent: true }), args.hostId),
  }),
);

builder.subscriptionField('hostDesiredState', (t) =>
  t.field({
    type: DesiredStateRef,
    description: 'The full desired state, then each newer revision as it commits.',
    args: { hostId: t.arg.id({ required: true }) },
    subscribe: (_r, args, ctx) => ctx.services.desiredState.stream(requireActor(ctx, { allowAgent: true }), args.hostId),
    resolve: (state) => state,
  }),
);

const ObjectTypeEnum = builder.enumType('StatusObjectType', {
  values: { PORT_FORWARD: { value: 'port_forward' }, FIREWALL_RULE: { value: 'firewall_rule' }, BANDWIDTH_LIMIT: { value: 'bandwidth_limit' } } as const,
});

const ObjectStatusChangeRef = builder.objectRef<ObjectStatusChange>('ObjectStatusChange').implement({
  fields: (t) => ({
    objectType: t.field({ type: ObjectTypeEnum, resolve: (c) => c.objectType }),
    objectId: t.exposeID('objectId'),
    hostId: t.exposeID('hostId'),
    status: t.field({ type: ApplyStatusEnum, resolve: (c) => c.status }),
    error: t.exposeString('error', { nullable: true }),
    revision: t.exposeInt('revision', { description: 'The desired-state revision the agent applied.' }),
  }),
});

const ObjectStatusInput = builder.inputType('ObjectStatusInput', {
  fields: (t) => ({
    objectType: t.field({ type: ObjectTypeEnum, required: true }),
    objectId: t.id({ required: true }),
    status: t.field({ type: ApplyStatusEnum, required: true }),
    error: t.string({ description: "FAILED only: the driver's error." }),
  }),
});

const ReportObjectStatusInput = builder.inputType('ReportObjectStatusInput', {
  fields: (t) => ({
    hostId: t.id({ required: true }),
    revision: t.int({ required: true, description: 'The desired-state revision these statuses are for.' }),
    objects: t.field({ type: [ObjectStatusInput], required: true }),
  }),
});

const ReportedRef = builder.objectRef<{ changes: ObjectStatusChange[] }>('ReportedObjectStatus').implement({
  fields: (t) => ({ changes: t.field({ type: [ObjectStatusChangeRef], description: 'The statuses that changed.', resolve: (r) => r.changes }) }),
});

builder.mutationField('reportObjectStatus', (t) =>
  t.field({
    type: ReportedRef,
    description: 'For host agents: the apply status of objects on their host.',
    args: { input: t.arg({ type: ReportObjectStatusInput, required: true }) },
    errors: resultOf('ReportObjectStatus', 'reported'),
    resolve: async (_r, { input }, ctx) => ({ changes: await ctx.services.objectStatus.report(requireActor(ctx, { allowAgent: true }), input) }),
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
