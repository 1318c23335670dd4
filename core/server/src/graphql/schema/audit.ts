/** The audit log: every change, who made it, before and after. */
import { filter, pipe } from 'graphql-yoga';
import type { AuditEntry } from '../../events/event-payloads.js';
import { validId } from '../../support/validate.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';

const AuditEntryRef = builder.objectRef<AuditEntry>('AuditEntry').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    at: t.expose('at', { type: 'DateTime' }),
    requestId: t.exposeString('requestId'),
    actorUserId: t.exposeID('actorUserId', { nullable: true }),
    tokenId: t.exposeID('tokenId', { nullable: true }),
    action: t.exposeString('action', { description: 'e.g. pool.create, address.allocate.' }),
    objectType: t.exposeString('objectType'),
    objectId: t.exposeString('objectId'),
    ownerId: t.exposeID('ownerId', { nullable: true }),
    before: t.expose('before', { type: 'JSON', nullable: true }),
    after: t.expose('after', { type: 'JSON', nullable: true }),
  }),
});

builder.queryFields((t) => ({
  auditLog: t.connection({
    type: AuditEntryRef,
    description: 'Newest first. Admins see every entry; users the entries about their own objects.',
    args: { objectType: t.arg.string({ required: false }), objectId: t.arg.string({ required: false }) },
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      const rows = await ctx.services.audit.list(
        requireActor(ctx),
        // a String argument since the first release (an ID type would break clients' documents): checked as an id here
        { objectType: args.objectType ?? undefined, objectId: args.objectId == null ? undefined : validId('objectId', args.objectId.toLowerCase()) },
        { before: page.after, limit: page.limit },
      );
      return connectionOf(rows, page);
    },
  }),
}));

builder.subscriptionFields((t) => ({
  auditLogAdded: t.field({
    type: AuditEntryRef,
    description: 'Entries as they are committed, filtered like auditLog.',
    args: { objectId: t.arg.string({ required: false }) },
    subscribe: (_r, args, ctx) => {
      const actor = requireActor(ctx);
      const objectId = args.objectId == null ? null : validId('objectId', args.objectId.toLowerCase());
      return pipe(
        ctx.services.audit.subscribe(),
        filter((entry: AuditEntry) => ctx.services.audit.canSee(actor, entry) && (objectId === null || entry.objectId === objectId)),
      );
    },
    resolve: (entry) => entry,
  }),
}));
