/** NAT port forwards and the common-ports presets. */
import { CapabilityNotSupportedError, ConflictError, NotFoundError, PortConflictError, QuotaExceededError, ValidationError } from '../../support/errors.js';
import type { ImportResult, ImportRow } from '../../services/port-forward-import-service.js';
import { COMMON_PORTS, type PortForward } from '../../services/port-forward-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
import { HostRef, PortRangeRef } from './hosts.js';
import { ApplyStatusEnum } from './apply-status.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';

/** Forwarded protocols. */
export const ForwardProtocolEnum = builder.enumType('ForwardProtocol', {
  values: { TCP: { value: 'tcp' }, UDP: { value: 'udp' }, BOTH: { value: 'both' } } as const,
});

/** Apply status of an object on its host, reported by the host's agent. */
export const PortForwardRef = builder.objectRef<PortForward>('PortForward').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    host: t.field({ type: HostRef, resolve: async (f, _a, ctx) => (await ctx.services.hosts.get(requireActor(ctx), f.hostId))! }),
    instance: t.field({ type: InstanceRef, resolve: async (f, _a, ctx) => (await ctx.services.instances.get(requireActor(ctx), f.instanceId))! }),
    protocol: t.field({ type: ForwardProtocolEnum, resolve: (f) => f.protocol }),
    hostAddress: t.exposeString('hostAddress', { nullable: true, description: "Null: every public address of the host (of the target's family)." }),
    hostPorts: t.field({ type: PortRangeRef, resolve: (f) => ({ start: f.hostPortStart, end: f.hostPortEnd }) }),
    targetAddress: t.exposeString('targetAddress'),
    targetPorts: t.field({ type: PortRangeRef, resolve: (f) => ({ start: f.targetPortStart, end: f.targetPortStart + (f.hostPortEnd - f.hostPortStart) }) }),
    sourceCidrs: t.exposeStringList('sourceCidrs', { description: 'Only these sources may connect; empty: any.' }),
    note: t.exposeString('note'),
    status: t.field({ type: ApplyStatusEnum, resolve: (f) => f.status }),
    statusError: t.exposeString('statusError', { nullable: true }),
    changedRevision: t.exposeInt('changedRevision', {
      description: "The host's desired revision in which this was created or last changed; status reports for older revisions do not apply to it.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const CommonPortRef = builder.objectRef<(typeof COMMON_PORTS)[number]>('CommonPort').implement({
  fields: (t) => ({
    service: t.exposeString('service'),
    port: t.exposeInt('port'),
    protocol: t.field({ type: ForwardProtocolEnum, resolve: (p) => p.protocol }),
  }),
});

builder.queryFields((t) => ({
  portForward: t.field({
    type: PortForwardRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.forwards.get(requireActor(ctx), args.id),
  }),
  portForwards: t.connection({
    type: PortForwardRef,
    description: 'Admins see every forward, users their own.',
    args: { instanceId: t.arg.id({ required: false }), hostId: t.arg.id({ required: false }) },
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      return connectionOf(await ctx.services.forwards.list(requireActor(ctx), { instanceId: args.instanceId, hostId: args.hostId }, page), page);
    },
  }),
  commonPorts: t.field({
    type: [CommonPortRef],
    description: 'Presets for UIs: SSH, HTTP, HTTPS, RDP, MySQL, PostgreSQL, Redis, MongoDB.',
    resolve: () => [...COMMON_PORTS],
  }),
}));

const CreatePortForwardInput = builder.inputType('CreatePortForwardInput', {
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    protocol: t.field({ type: ForwardProtocolEnum, required: true }),
    hostPort: t.string({ description: '"10022" or "8000-8010". Absent: the lowest free port(s) in the host\'s allowed range.' }),
    targetPort: t.string({ required: true, description: '"22" or "80-90"; as many ports as hostPort.' }),
    targetAddress: t.string({ description: 'An address of the instance. Absent: its first IPv4 address.' }),
    hostAddress: t.string({ description: "One of the host's public addresses. Absent: all of them." }),
    sourceCidrs: t.stringList({ description: 'Allow only these sources, e.g. ["198.51.100.0/24"].' }),
    note: t.string(),
  }),
});

const DeletePortForwardInput = builder.inputType('DeletePortForwardInput', { fields: (t) => ({ portForwardId: t.id({ required: true }) }) });

builder.mutationFields((t) => ({
  createPortForward: t.field({
    type: PortForwardRef,
    description: 'Forwards a host port (range) to an instance. PORT_CONFLICT when the port is taken for that protocol and address.',
    args: { input: t.arg({ type: CreatePortForwardInput, required: true }) },
    errors: resultOf('CreatePortForward', 'portForward', [
      ValidationError,
      NotFoundError,
      ConflictError,
      QuotaExceededError,
      PortConflictError,
      CapabilityNotSupportedError,
    ]),
    resolve: (_r, { input }, ctx) => ctx.services.forwards.create(requireActor(ctx), input),
  }),
  deletePortForward: t.field({
    type: PortForwardRef,
    args: { input: t.arg({ type: DeletePortForwardInput, required: true }) },
    errors: resultOf('DeletePortForward', 'portForward', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.forwards.delete(requireActor(ctx), input.portForwardId),
  }),
}));

const ImportActionEnum = builder.enumType('PortForwardImportAction', {
  values: { CREATE: { value: 'create' }, UNCHANGED: { value: 'unchanged' }, CONFLICT: { value: 'conflict' }, INVALID: { value: 'invalid' } } as const,
});

const ImportRowRef = builder.objectRef<ImportRow>('PortForwardImportRow').implement({
  fields: (t) => ({
    row: t.exposeInt('row', { description: 'Line in the file; the header is line 1.' }),
    action: t.field({ type: ImportActionEnum, resolve: (r) => r.action }),
    reason: t.exposeString('reason', { nullable: true }),
    column: t.exposeString('column', { nullable: true }),
    portForward: t.field({ type: PortForwardRef, nullable: true, description: 'As it will be (CREATE) or as it is (UNCHANGED).', resolve: (r) => r.forward }),
  }),
});

const ImportResultRef = builder.objectRef<ImportResult>('PortForwardImport').implement({
  fields: (t) => ({
    dryRun: t.exposeBoolean('dryRun'),
    applied: t.exposeBoolean('applied', { description: 'True when the forwards were written (never for a dry run).' }),
    created: t.int({ resolve: (r) => r.rows.filter((x) => x.action === 'create').length }),
    unchanged: t.int({ resolve: (r) => r.rows.filter((x) => x.action === 'unchanged').length }),
    conflicts: t.int({ resolve: (r) => r.rows.filter((x) => x.action === 'conflict').length }),
    invalid: t.int({ resolve: (r) => r.rows.filter((x) => x.action === 'invalid').length }),
    rows: t.field({ type: [ImportRowRef], complexity: { field: 1, multiplier: 1 }, resolve: (r) => r.rows }),
  }),
});

const ImportPortForwardsInput = builder.inputType('ImportPortForwardsInput', {
  fields: (t) => ({
    hostId: t.id({ required: true }),
    csv: t.string({
      required: true,
      description:
        'Header and rows: protocol,host_port,vm_ip,vm_port,note[,host_address][,source_cidrs]. Ports may be ranges; an empty host_port picks free ports.',
    }),
    dryRun: t.boolean({ defaultValue: false, description: 'Return the per-row plan and change nothing.' }),
  }),
});

builder.queryField('exportPortForwards', (t) =>
  t.string({
    description: 'The forwards of a host you may see, as CSV in the import format.',
    args: { hostId: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.forwardImport.export(requireActor(ctx), args.hostId),
  }),
);

builder.mutationField('importPortForwards', (t) =>
  t.field({
    type: ImportResultRef,
    description: 'Bulk import from CSV: all rows in one transaction, or none when any row is invalid or conflicts.',
    args: { input: t.arg({ type: ImportPortForwardsInput, required: true }) },
    errors: resultOf('ImportPortForwards', 'result', [ValidationError, NotFoundError, QuotaExceededError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.forwardImport.import(requireActor(ctx), input),
  }),
);
