/** A host's desired state, for its agent (and admins): a query and a live subscription. */
import type { DesiredState } from '@gatehouse/sdk';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';

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
