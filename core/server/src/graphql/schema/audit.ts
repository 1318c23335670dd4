/** The audit log: every change, who made it, before and after. */
import { filter, pipe } from 'graphql-yoga';
import type { AuditEntry } from '../../events/event-payloads.js';
import { validId } from '../../support/validate.js';
import { isAdmin } from '../../auth/actor.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf, pageTypes } from '../pagination.js';
import { UserRef } from './users.js';

const AuditEntryRef = builder.objectRef<AuditEntry>('AuditEntry').implement({
  description: 'One change to one object: who made it, with which token, in which request, and the object before and after.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The entry id; ids sort by time.' }),
    at: t.expose('at', { type: 'DateTime', description: 'When the change committed.' }),
    requestId: t.exposeString('requestId', { description: 'The HTTP request that made it; entries of one mutation share it.' }),
    actorUserId: t.exposeID('actorUserId', { nullable: true, description: 'The user who made it; the all-zero id for work the controller does on its own.' }),
    actor: t.field({
      type: UserRef,
      nullable: true,
      description: 'The user who made it, by name; null for work the controller does on its own and when the caller may not see that user (admins see all).',
      resolve: async (e, _a, ctx) => {
        const caller = requireActor(ctx);
        if (!e.actorUserId || !(isAdmin(caller) || e.actorUserId === caller.userId)) return null;
        return (await ctx.loaders.user.load(e.actorUserId)) ?? null;
      },
    }),
    tokenId: t.exposeID('tokenId', { nullable: true, description: 'The API token used; the all-zero id for work the controller does on its own.' }),
    action: t.exposeString('action', { description: 'What was done, e.g. "pool.create", "address.allocate".' }),
    objectType: t.exposeString('objectType', { description: 'The kind of object, e.g. "PortForward".' }),
    objectId: t.exposeString('objectId', { description: 'The id of the object changed.' }),
    ownerId: t.exposeID('ownerId', {
      nullable: true,
      description: "The owner of the object (whose users' audit log shows it); null for shared objects such as hosts.",
    }),
    before: t.expose('before', { type: 'JSON', nullable: true, description: 'The object before the change; null when it was created.' }),
    after: t.expose('after', { type: 'JSON', nullable: true, description: 'The object after the change; null when it was deleted.' }),
  }),
});

builder.queryFields((t) => ({
  auditLog: t.connection(
    {
      type: AuditEntryRef,
      description: 'Newest first. Admins see every entry; users the entries about their own objects.',
      args: {
        objectType: t.arg.string({ required: false, description: 'Only entries about this kind of object, e.g. "PortForward".' }),
        objectId: t.arg.string({ required: false, description: 'Only entries about this object (its id).' }),
      },
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
    },
    ...pageTypes('audit entries'),
  ),
}));

builder.subscriptionFields((t) => ({
  auditLogAdded: t.field({
    type: AuditEntryRef,
    description: 'Entries as they are committed, filtered like auditLog.',
    args: { objectId: t.arg.string({ required: false, description: 'Only entries about this object (its id). Absent: all you may see.' }) },
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
