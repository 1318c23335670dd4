/** NAT port forwards and the common-ports presets. */
import { CapabilityNotSupportedError, ConflictError, NotFoundError, PortConflictError, QuotaExceededError, ValidationError } from '../../support/errors.js';
import type { ImportResult, ImportRow } from '../../services/port-forward-import-service.js';
import { COMMON_PORTS, type PortForward } from '../../services/port-forward-service.js';
import { listeningClash, listeningText } from '../../services/port-audit.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { countedConnectionOf, countedPageTypes } from '../counted-connection.js';
import { connectionComplexity, pageOf } from '../pagination.js';
import { HostRef, PortRangeRef } from './hosts.js';
import { ApplyStatusEnum } from './apply-status.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';

/** Forwarded protocols. */
export const ForwardProtocolEnum = builder.enumType('ForwardProtocol', {
  description: 'The transport protocol a port forward carries.',
  values: {
    TCP: { value: 'tcp', description: 'TCP only.' },
    UDP: { value: 'udp', description: 'UDP only.' },
    BOTH: { value: 'both', description: 'TCP and UDP on the same ports (counts twice against quotaForwardedPorts).' },
  } as const,
});

const RateLimitActionEnum = builder.enumType('RateLimitAction', {
  description: 'What a new connection over a rate limit gets.',
  values: {
    DROP: { value: 'drop', description: 'Silently dropped (the client retries or times out).' },
    REJECT: { value: 'reject', description: 'Refused at once: a TCP reset, or ICMP port unreachable for UDP.' },
  } as const,
});

const PortForwardRateLimitRef = builder.objectRef<NonNullable<PortForward['rateLimit']>>('PortForwardRateLimit').implement({
  description: 'New-connection rate limits of a forward (DDoS hardening); established connections are never limited.',
  fields: (t) => ({
    perSource: t.exposeInt('perSource', { nullable: true, description: 'New connections per second from one source address; null: no per-source limit.' }),
    total: t.exposeInt('total', { nullable: true, description: 'New connections per second from all sources together; null: no overall limit.' }),
    burst: t.exposeInt('burst', { description: 'New connections allowed at once above the rate.' }),
    action: t.field({ type: RateLimitActionEnum, description: 'DROP or REJECT.', resolve: (l) => l.action }),
  }),
});

const PortForwardRateLimitedRef = builder.objectRef<{ connections: number; since: Date }>('PortForwardRateLimited').implement({
  description:
    "New connections a forward's rate limits refused (dropped or rejected), as its host's agent counts them (reported with the traffic counters, every second).",
  fields: (t) => ({
    connections: t.exposeFloat('connections', { description: 'Connections refused since `since` (an integer), summed over agent and table restarts.' }),
    since: t.expose('since', { type: 'DateTime', description: "When the agent first reported the forward's rate-limit counter." }),
  }),
});

const PortForwardRateLimitInput = builder.inputType('PortForwardRateLimitInput', {
  description: 'New-connection rate limits: at least one of perSource and total. Needs a driver with PortForwardCapabilities.rateLimits.',
  fields: (t) => ({
    perSource: t.int({ description: 'New connections per second from one source address, 1-1000000.' }),
    total: t.int({ description: 'New connections per second from all sources together (per host address and protocol), 1-1000000.' }),
    burst: t.int({ description: 'New connections allowed at once above the rate, 0-1000000. Default: a tenth of the highest rate, at least 5.' }),
    action: t.field({ type: RateLimitActionEnum, description: 'What an excess connection gets. Default DROP.' }),
  }),
});

type StoredTarget = NonNullable<PortForward['balance']>['targets'][number];

const PortForwardTargetRef = builder.objectRef<StoredTarget>('PortForwardTarget').implement({
  description: "One of a forward's targets: an instance address that gets a share of the forward's new connections.",
  fields: (t) => ({
    instanceId: t.exposeID('instanceId', { description: 'The instance holding the address.' }),
    instance: t.field({
      type: InstanceRef,
      nullable: true,
      description: 'The instance holding the address; null when it is gone (the target is then left out).',
      resolve: (target, _a, ctx) => ctx.services.instances.get(requireActor(ctx), target.instanceId),
    }),
    targetAddress: t.exposeString('address', { description: 'The instance address connections go to.' }),
    weight: t.exposeInt('weight', { description: "Share of new connections relative to the other targets' weights, 1-100." }),
  }),
});

const PortForwardTargetInput = builder.inputType('PortForwardTargetInput', {
  description: "One target of a forward balanced over several: an address of an instance of the forward's owner on the same host.",
  fields: (t) => ({
    instanceId: t.id({ required: true, description: "The instance (the forward's own or another of its owner on the same host)." }),
    targetAddress: t.string({ description: 'An address of that instance, of the family of the forward. Absent: its first IPv4 address.' }),
    weight: t.int({ description: 'Share of new connections relative to the others, 1-100. Default 1.' }),
  }),
});

export const PortForwardRef = builder.objectRef<PortForward>('PortForward').implement({
  description:
    "NAT: connections to a host port (range) on the host's public address are forwarded to an instance's address and port. Applied by the host's agent in nftables maps.",
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The port forward id.' }),
    host: t.field({
      type: HostRef,
      description: 'The host whose ports are forwarded.',
      resolve: async (f, _a, ctx) => (await ctx.services.hosts.get(requireActor(ctx), f.hostId))!,
    }),
    instance: t.field({
      type: InstanceRef,
      description: 'The instance traffic goes to.',
      resolve: async (f, _a, ctx) => (await ctx.services.instances.get(requireActor(ctx), f.instanceId))!,
    }),
    protocol: t.field({ type: ForwardProtocolEnum, description: 'TCP, UDP or BOTH.', resolve: (f) => f.protocol }),
    hostAddress: t.exposeString('hostAddress', { nullable: true, description: "Null: every public address of the host (of the target's family)." }),
    hostPorts: t.field({
      type: PortRangeRef,
      description: 'The host ports that are forwarded; a single port has start = end.',
      resolve: (f) => ({ start: f.hostPortStart, end: f.hostPortEnd }),
    }),
    targetAddress: t.exposeString('targetAddress', { description: 'The instance address connections go to, e.g. "10.0.0.5".' }),
    targetPorts: t.field({
      type: PortRangeRef,
      description: 'The instance ports, as many as hostPorts: host port start + n goes to target port start + n.',
      resolve: (f) => ({ start: f.targetPortStart, end: f.targetPortStart + (f.hostPortEnd - f.hostPortStart) }),
    }),
    sourceCidrs: t.exposeStringList('sourceCidrs', { description: 'Only these sources may connect; empty: any.' }),
    rateLimit: t.field({
      type: PortForwardRateLimitRef,
      nullable: true,
      description: 'New-connection rate limits; null: none.',
      resolve: (f) => f.rateLimit,
    }),
    rateLimited: t.field({
      type: PortForwardRateLimitedRef,
      nullable: true,
      description:
        'New connections the rate limits refused (DROP: dropped, REJECT: reset or refused) and since when; null while the agent has not reported a rate-limit counter for the forward. Kept when the limit is removed.',
      resolve: (f) => (f.rateLimitedSince ? { connections: f.rateLimitedConnections, since: f.rateLimitedSince } : null),
    }),
    targets: t.field({
      type: [PortForwardTargetRef],
      description:
        'Every target new connections are balanced over, in the order given; a forward with one target lists its own (weight 1). Targets whose instance is stopped are left out on the host.',
      resolve: (f) => f.balance?.targets ?? [{ instanceId: f.instanceId, addressId: f.targetAddressId, address: f.targetAddress, weight: 1 }],
    }),
    sourceAffinity: t.boolean({
      description: 'Whether one client (source address) always reaches the same target; false: each new connection goes to the next target in weighted turn.',
      resolve: (f) => f.balance?.sourceAffinity ?? false,
    }),
    note: t.exposeString('note', { description: 'Free text, e.g. "SSH"; empty when none was given.' }),
    status: t.field({ type: ApplyStatusEnum, description: 'Whether the forward is in effect on the host.', resolve: (f) => f.status }),
    statusError: t.exposeString('statusError', { nullable: true, description: "FAILED: the driver's error; null otherwise." }),
    hostPortWarning: t.string({
      nullable: true,
      description:
        'Set when a service on the host now listens on a port of this forward (it started after the forward was made; the port audit refuses new ones): e.g. "sshd (pid 812) listens on 0.0.0.0:22/tcp". Connections to the forwarded addresses go to the instance, not to that service. Null: no clash known.',
      resolve: async (f, _a, ctx) => {
        const audit = await ctx.loaders.portAudit.load(f.hostId);
        const clash = listeningClash(audit.sockets, audit.publicAddresses, {
          protocol: f.protocol,
          hostAddress: f.hostAddress,
          ports: { start: f.hostPortStart, end: f.hostPortEnd },
        });
        return clash ? listeningText(clash) : null;
      },
    }),
    changedRevision: t.exposeInt('changedRevision', {
      description: "The host's desired revision in which this was created or last changed; status reports for older revisions do not apply to it.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the forward was created.' }),
  }),
});

const CommonPortRef = builder.objectRef<(typeof COMMON_PORTS)[number]>('CommonPort').implement({
  description: 'A well-known service port, offered as a preset for targetPort.',
  fields: (t) => ({
    service: t.exposeString('service', { description: 'The service name, e.g. "SSH".' }),
    port: t.exposeInt('port', { description: 'Its usual port inside the instance, e.g. 22.' }),
    protocol: t.field({ type: ForwardProtocolEnum, description: 'Its protocol.', resolve: (p) => p.protocol }),
  }),
});

builder.queryFields((t) => ({
  portForward: t.field({
    type: PortForwardRef,
    nullable: true,
    description: 'A port forward by id; null when it does not exist or is not yours.',
    args: { id: t.arg.id({ required: true, description: 'The port forward id.' }) },
    resolve: (_r, args, ctx) => ctx.services.forwards.get(requireActor(ctx), args.id),
  }),
  portForwards: t.connection(
    {
      type: PortForwardRef,
      description: 'Admins see every forward, users their own; oldest first.',
      args: {
        instanceId: t.arg.id({ required: false, description: 'Only the forwards to this instance.' }),
        hostId: t.arg.id({ required: false, description: 'Only the forwards on this host.' }),
      },
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        const actor = requireActor(ctx);
        const filter = { instanceId: args.instanceId, hostId: args.hostId };
        return countedConnectionOf(await ctx.services.forwards.list(actor, filter, page), page, () => ctx.services.forwards.count(actor, filter));
      },
    },
    ...countedPageTypes('port forwards'),
  ),
  commonPorts: t.field({
    type: [CommonPortRef],
    description: 'Presets for UIs: SSH, HTTP, HTTPS, RDP, MySQL, PostgreSQL, Redis, MongoDB.',
    resolve: () => [...COMMON_PORTS],
  }),
}));

const CreatePortForwardInput = builder.inputType('CreatePortForwardInput', {
  description: "A forward from the instance's host to the instance.",
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance to forward to (yours, or any for admins).' }),
    protocol: t.field({ type: ForwardProtocolEnum, required: true, description: 'TCP, UDP or BOTH.' }),
    hostPort: t.string({
      description:
        '"10022" or "8000-8010", inside Host.portRange and outside Host.reservedPorts. Absent: the lowest free port(s) in the host\'s allowed range. PORT_CONFLICT when taken.',
    }),
    targetPort: t.string({ required: true, description: '"22" or "80-90"; as many ports as hostPort.' }),
    targetAddress: t.string({ description: 'An address of the instance. Absent: its first IPv4 address.' }),
    hostAddress: t.string({ description: "One of the host's public addresses. Absent: all of them." }),
    sourceCidrs: t.stringList({ description: 'Allow only these sources (at most 64), e.g. ["198.51.100.0/24"]. Absent or empty: any source.' }),
    rateLimit: t.field({ type: PortForwardRateLimitInput, description: 'New-connection rate limits. Absent: none.' }),
    targets: t.field({
      type: [PortForwardTargetInput],
      description:
        "Balance new connections over these targets (1-16; the forward's own, instanceId/targetAddress, among them). Needs a driver with PortForwardCapabilities.multiTarget when there are two or more. Absent: the own target alone.",
    }),
    sourceAffinity: t.boolean({ description: 'With targets: one client (source address) always reaches the same target. Default false.' }),
    note: t.string({ description: 'Free text, at most 256 characters, e.g. "SSH".' }),
  }),
});

const UpdatePortForwardInput = builder.inputType('UpdatePortForwardInput', {
  description: 'The fields of a forward to change; absent fields keep their value. The result is checked exactly as createPortForward checks a new forward.',
  fields: (t) => ({
    portForwardId: t.id({ required: true, description: 'The port forward.' }),
    protocol: t.field({ type: ForwardProtocolEnum, description: 'TCP, UDP or BOTH; null keeps it.' }),
    hostPort: t.string({
      description: 'New host port(s), e.g. "10023" or "8000-8010"; null keeps them. PORT_CONFLICT when taken by another forward.',
    }),
    targetPort: t.string({ description: 'New instance port(s), as many as the host ports; null keeps them.' }),
    targetAddress: t.string({ description: "Another address of the forward's instance; null keeps the current one." }),
    hostAddress: t.string({ description: "One of the host's public addresses; null: all of them." }),
    sourceCidrs: t.stringList({ description: 'The new allow-list (at most 64 prefixes); null or empty: any source.' }),
    rateLimit: t.field({ type: PortForwardRateLimitInput, description: 'New rate limits (replacing the old ones); null removes them.' }),
    targets: t.field({
      type: [PortForwardTargetInput],
      description: "Every target (the forward's own among them), replacing the list; null: the own target alone.",
    }),
    sourceAffinity: t.boolean({ description: 'Whether one client always reaches the same target; null keeps it.' }),
    note: t.string({ description: 'Free text, at most 256 characters; null clears it.' }),
  }),
});

const DeletePortForwardInput = builder.inputType('DeletePortForwardInput', {
  description: 'Which forward to delete.',
  fields: (t) => ({ portForwardId: t.id({ required: true, description: 'The port forward.' }) }),
});

builder.mutationFields((t) => ({
  createPortForward: t.field({
    type: PortForwardRef,
    description:
      "Forwards a host port (range) to an instance. PORT_CONFLICT when the port is taken for that protocol and address; QUOTA_EXCEEDED beyond the owner's quotaPortForwards or quotaForwardedPorts.",
    args: { input: t.arg({ type: CreatePortForwardInput, required: true, description: 'The forward.' }) },
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
  updatePortForward: t.field({
    type: PortForwardRef,
    description:
      "Edits a forward in place (note, ports, allow-list, target address, protocol): same id, PENDING until the host's agent applies it, which it does atomically (no instant where neither the old nor the new rule answers). PORT_CONFLICT when the new host port is taken; QUOTA_EXCEEDED when it holds more ports than the owner's quotaForwardedPorts allows.",
    args: { input: t.arg({ type: UpdatePortForwardInput, required: true, description: 'The forward and the fields to change.' }) },
    errors: resultOf('UpdatePortForward', 'portForward', [ValidationError, NotFoundError, QuotaExceededError, PortConflictError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => {
      const { portForwardId, ...rest } = input;
      // GraphQL absent fields arrive as undefined, explicit nulls as null
      const patch = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
      return ctx.services.forwards.update(requireActor(ctx), { portForwardId, ...patch });
    },
  }),
  deletePortForward: t.field({
    type: PortForwardRef,
    description: 'Deletes a forward; its host port is free again at once.',
    args: { input: t.arg({ type: DeletePortForwardInput, required: true, description: 'The forward.' }) },
    errors: resultOf('DeletePortForward', 'portForward', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.forwards.delete(requireActor(ctx), input.portForwardId),
  }),
}));

const ImportActionEnum = builder.enumType('PortForwardImportAction', {
  description: 'What an import does with one CSV row.',
  values: {
    CREATE: { value: 'create', description: 'The row becomes a new forward.' },
    UNCHANGED: { value: 'unchanged', description: 'An identical forward exists already; nothing to do.' },
    CONFLICT: { value: 'conflict', description: 'The host port is taken by a different forward (or by another row).' },
    INVALID: { value: 'invalid', description: 'The row is malformed; reason and column say why.' },
  } as const,
});

const ImportRowRef = builder.objectRef<ImportRow>('PortForwardImportRow').implement({
  description: 'The plan for one CSV row.',
  fields: (t) => ({
    row: t.exposeInt('row', { description: 'Line in the file; the header is line 1.' }),
    action: t.field({ type: ImportActionEnum, description: 'CREATE, UNCHANGED, CONFLICT or INVALID.', resolve: (r) => r.action }),
    reason: t.exposeString('reason', { nullable: true, description: 'CONFLICT and INVALID: why, naming the value; null otherwise.' }),
    column: t.exposeString('column', { nullable: true, description: 'INVALID: the offending column, e.g. "host_port"; null otherwise.' }),
    portForward: t.field({ type: PortForwardRef, nullable: true, description: 'As it will be (CREATE) or as it is (UNCHANGED).', resolve: (r) => r.forward }),
  }),
});

/** Rows of a plan with an action, counted without a copy of the 50,000 of them. */
function countOf(result: ImportResult, action: ImportRow['action']): number {
  let n = 0;
  for (const row of result.rows) if (row.action === action) n++;
  return n;
}

const ImportResultRef = builder.objectRef<ImportResult>('PortForwardImport').implement({
  description: 'The outcome of a CSV import: a plan per row, and whether it was written.',
  fields: (t) => ({
    dryRun: t.exposeBoolean('dryRun', { description: 'Whether this was a dry run (input.dryRun).' }),
    applied: t.exposeBoolean('applied', { description: 'True when the forwards were written (never for a dry run).' }),
    created: t.int({ description: 'Rows that create a forward.', resolve: (r) => countOf(r, 'create') }),
    unchanged: t.int({ description: 'Rows that match an existing forward.', resolve: (r) => countOf(r, 'unchanged') }),
    conflicts: t.int({ description: 'Rows whose host port is taken.', resolve: (r) => countOf(r, 'conflict') }),
    invalid: t.int({ description: 'Malformed rows.', resolve: (r) => countOf(r, 'invalid') }),
    rows: t.field({
      type: [ImportRowRef],
      description: 'One plan per data row, in file order.',
      complexity: { field: 1, multiplier: 1 },
      resolve: (r) => r.rows,
    }),
  }),
});

const ImportPortForwardsInput = builder.inputType('ImportPortForwardsInput', {
  description: 'A CSV file of forwards for one host.',
  fields: (t) => ({
    hostId: t.id({ required: true, description: 'The host the forwards are on.' }),
    csv: t.string({
      required: true,
      description:
        'A header row, then one forward per row: protocol,host_port,vm_ip,vm_port[,note][,host_address][,source_cidrs][,rate_limit][,targets], e.g. "tcp,10022,10.0.0.5,22,SSH". Ports may be ranges; an empty host_port picks free ports; source_cidrs are separated by spaces or semicolons; rate_limit is "per_source=50 total=1000 burst=10 action=drop" (or a bare number: per_source), empty for none; targets balances over several instance addresses, vm_ip among them: "10.0.0.5*2 10.0.0.6*1 affinity" (ADDRESS[*WEIGHT], weight 1-100, default 1; affinity: one client, one target), empty for vm_ip alone. At most 50000 rows and 8 MiB.',
    }),
    dryRun: t.boolean({ defaultValue: false, description: 'Return the per-row plan and change nothing.' }),
  }),
});

builder.queryField('exportPortForwards', (t) =>
  t.string({
    description:
      'The forwards of a host you may see, or of one instance on it, as CSV in the import format. An instance that is not on the host or not yours yields the header row alone.',
    args: {
      hostId: t.arg.id({ required: true, description: 'The host.' }),
      instanceId: t.arg.id({ required: false, description: 'Only the forwards to this instance; absent: every forward on the host you may see.' }),
    },
    resolve: (_r, args, ctx) => ctx.services.forwardImport.export(requireActor(ctx), args.hostId, args.instanceId),
  }),
);

builder.mutationField('importPortForwards', (t) =>
  t.field({
    type: ImportResultRef,
    description: 'Bulk import from CSV: all rows in one transaction, or none when any row is invalid or conflicts.',
    args: { input: t.arg({ type: ImportPortForwardsInput, required: true, description: 'The host and the CSV.' }) },
    errors: resultOf('ImportPortForwards', 'result', [ValidationError, NotFoundError, QuotaExceededError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.forwardImport.import(requireActor(ctx), input),
  }),
);
