/** Hosts: hypervisor hosts and gateways. */
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf, pageTypes } from '../pagination.js';
import type { Host } from '../../services/host-service.js';
import { DEFAULT_TRAFFIC_CAP_BPS } from '../../traffic/counter-delta.js';
import { resultOf } from './mutation-result.js';

/** An inclusive port range. */
export const PortRangeRef = builder.objectRef<{ start: number; end: number }>('PortRange').implement({
  description: 'An inclusive range of ports, 1-65535; a single port has start = end.',
  fields: (t) => ({ start: t.exposeInt('start', { description: 'First port.' }), end: t.exposeInt('end', { description: 'Last port (inclusive).' }) }),
});

export const HostRef = builder.objectRef<Host>('Host').implement({
  description: 'A hypervisor host or gateway, managed by one host agent running one backend plugin.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The host id.' }),
    name: t.exposeString('name', { description: 'Unique among hosts.' }),
    backend: t.field({
      type: 'BackendId',
      description:
        'The id of the plugin the host\'s agent runs: "linux", "docker", "lxd", "proxmox", "esxi" (built in) or a third-party plugin\'s id. Host.driver says what it can do once its agent connected.',
      resolve: (h) => h.backend,
    }),
    portRange: t.field({
      type: PortRangeRef,
      description: 'Host ports that may be forwarded.',
      resolve: (h) => ({ start: h.portRangeStart, end: h.portRangeEnd }),
    }),
    reservedPorts: t.field({ type: [PortRangeRef], description: 'Ports never handed out.', resolve: (h) => h.reservedPorts }),
    maxForwardPorts: t.exposeInt('maxForwardPorts', {
      description: "Most host ports one forward of a non-admin user may span on this host (a range's width).",
    }),
    publicAddresses: t.exposeStringList('publicAddresses', { description: 'IPv4/IPv6 addresses of the host that port forwards listen on.' }),
    trafficCapBps: t.float({
      description:
        'The fastest, in bits per second, a traffic counter of this host can grow (its fastest NIC); a larger jump between two readings is impossible, discarded and logged. Default 100 Gbit/s.',
      resolve: (h) => h.trafficCapBps ?? DEFAULT_TRAFFIC_CAP_BPS,
    }),
    defaultPoolId: t.exposeID('defaultPoolId', { nullable: true, description: "Pool for discovered instances' NICs without an address in a pool." }),
    discoveryOwnerId: t.exposeID('discoveryOwnerId', { nullable: true, description: 'Owner of instances registered from discovery; null: the first admin.' }),
    desiredRevision: t.exposeInt('desiredRevision', { description: 'Revision of the state the host must apply; bumped with every change to it.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the host was registered.' }),
  }),
});

builder.queryFields((t) => ({
  host: t.field({
    type: HostRef,
    nullable: true,
    description: 'A host; an AGENT token may read its own host (and its agent status), no other.',
    args: { id: t.arg.id({ required: true, description: 'The host id.' }) },
    resolve: (_r, args, ctx) => ctx.services.hosts.get(requireActor(ctx, { allowAgent: true }), args.id),
  }),
  agentHost: t.field({
    type: HostRef,
    nullable: true,
    description: 'For an AGENT token: the host it acts for (how an agent started without --host finds its host). Null for other tokens.',
    resolve: (_r, _a, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      return actor.scope === 'agent' && actor.hostId ? ctx.services.hosts.get(actor, actor.hostId) : null;
    },
  }),
  hosts: t.connection(
    {
      type: HostRef,
      description: 'All hosts, oldest first.',
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        return connectionOf(await ctx.services.hosts.list(requireActor(ctx), page), page);
      },
    },
    ...pageTypes('hosts'),
  ),
}));

const CreateHostInput = builder.inputType('CreateHostInput', {
  description: 'A new host. Its agent then connects with an AGENT token created for it (createApiToken).',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Unique among hosts (CONFLICT otherwise): 1-64 letters, digits, space, ".", "_" or "-".' }),
    backend: t.field({
      type: 'BackendId',
      required: true,
      description: 'The plugin id the host\'s agent runs ("linux", "docker", "lxd", "proxmox", "esxi", or a third party\'s).',
    }),
    portRangeStart: t.int({ description: 'First host port forwards may use, 1-65535. Default 1024.' }),
    portRangeEnd: t.int({ description: 'Last host port forwards may use, not below portRangeStart. Default 65535.' }),
    reservedPorts: t.stringList({ description: 'Ports or ranges never handed out: ["22", "8000-8100"].' }),
    maxForwardPorts: t.int({ description: 'Most host ports one forward of a non-admin user may span (1-65535). Default 1000.' }),
    trafficCapBps: t.float({ description: 'The fastest a traffic counter of the host can grow, bits per second (10^6 to 10^13). Default 100 Gbit/s.' }),
    publicAddresses: t.stringList({ description: 'IPv4/IPv6 addresses of the host that forwards can use, e.g. ["203.0.113.10", "2001:db8::10"].' }),
    defaultPoolId: t.id({ description: "Pool a discovered instance's NIC gets an address from when none of its own lies in a pool." }),
    discoveryOwnerId: t.id({ description: 'Owner of instances registered from discovery. Default: the first admin.' }),
  }),
});

const UpdateHostInput = builder.inputType('UpdateHostInput', {
  description: 'Absent fields keep their value. Changing ports does not move existing forwards.',
  fields: (t) => ({
    hostId: t.id({ required: true, description: 'The host to change.' }),
    name: t.string({ description: 'New name, unique among hosts.' }),
    portRangeStart: t.int({ description: 'First host port forwards may use, 1-65535.' }),
    portRangeEnd: t.int({ description: 'Last host port forwards may use.' }),
    reservedPorts: t.stringList({ description: 'Replaces the list.' }),
    maxForwardPorts: t.int({ description: 'Most host ports one forward of a non-admin user may span (1-65535).' }),
    trafficCapBps: t.float({ description: 'The fastest a traffic counter of the host can grow, bits per second (10^6 to 10^13).' }),
    publicAddresses: t.stringList({ description: 'Replaces the list.' }),
    defaultPoolId: t.id({ description: "Pool a discovered instance's NIC gets an address from when none of its own lies in a pool." }),
    discoveryOwnerId: t.id({ description: 'Owner of instances registered from discovery.' }),
  }),
});

const DeleteHostInput = builder.inputType('DeleteHostInput', {
  description: 'Which host to remove.',
  fields: (t) => ({ hostId: t.id({ required: true, description: 'The host; it must have no instances and no host-scoped pools.' }) }),
});

builder.mutationFields((t) => ({
  createHost: t.field({
    type: HostRef,
    description: 'Registers a host (admin only). CONFLICT when the name is taken.',
    args: { input: t.arg({ type: CreateHostInput, required: true, description: 'The host.' }) },
    errors: resultOf('CreateHost', 'host', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.hosts.create(requireActor(ctx), input),
  }),
  updateHost: t.field({
    type: HostRef,
    description: 'Changes a host (admin only).',
    args: { input: t.arg({ type: UpdateHostInput, required: true, description: 'The host and the fields to change.' }) },
    errors: resultOf('UpdateHost', 'host', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.hosts.update(requireActor(ctx), input),
  }),
  deleteHost: t.field({
    type: HostRef,
    description: 'Removes a host without instances or host-scoped pools (admin only); CONFLICT while it has any.',
    args: { input: t.arg({ type: DeleteHostInput, required: true, description: 'The host.' }) },
    errors: resultOf('DeleteHost', 'host', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.hosts.delete(requireActor(ctx), input.hostId),
  }),
}));
