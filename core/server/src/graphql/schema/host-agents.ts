/** Host agents: their status on each host (`Host.agent`), their own reports about themselves, and the live feed of changes for admins. */
import type { ReportHostStatusInput as ReportHostStatusWire } from '@gatehouse/agent-protocol';
import type { DiscoveredInstanceJson, ListeningSocketJson } from '../../db/schema.js';
import { mayActForHostAgent, type HostAgentStatus } from '../../services/host-agent-service.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { HostRef } from './hosts.js';
import { resultOf } from './mutation-result.js';

const DiscoveredNicRef = builder.objectRef<DiscoveredInstanceJson['nics'][number]>('DiscoveredNic').implement({
  description: 'A network interface of a discovered instance, as the backend reports it.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'The interface name the backend gives, e.g. "eth0" or "net0".' }),
    mac: t.exposeString('mac', { nullable: true, description: 'Lower-case, colon-separated; null for interfaces without one.' }),
    addresses: t.exposeStringList('addresses', { description: 'Canonical addresses, with their prefix length when the backend gave one ("10.0.0.2/24").' }),
  }),
});

const DiscoveredInstanceRef = builder.objectRef<DiscoveredInstanceJson>('DiscoveredInstance').implement({
  description: "An instance the host's agent found on its host through its plugin.",
  fields: (t) => ({
    externalId: t.exposeString('externalId', { description: "The backend's own id (container id, VMID, moref)." }),
    name: t.exposeString('name', { description: "The backend's name for it." }),
    running: t.boolean({ nullable: true, description: 'Whether the instance runs; null when the plugin does not say.', resolve: (i) => i.running ?? null }),
    nics: t.field({ type: [DiscoveredNicRef], description: 'Its network interfaces.', resolve: (i) => i.nics }),
  }),
});

const AgentStartSourceEnum = builder.enumType('AgentStartSource', {
  description: "Where a host agent's current run got its first desired state.",
  values: {
    CACHE: {
      value: 'CACHE',
      description:
        'Its last-known-good state on the host (the state directory), applied at start before and regardless of reaching a controller: the host kept its forwards, firewalls and limits through a restart while the controller was unreachable.',
    },
    CONTROLLER: { value: 'CONTROLLER', description: 'No usable cached state (none, corrupt or of another host): the agent waited for the controller.' },
  } as const,
});

const HostAgentStatusRef = builder.objectRef<HostAgentStatus>('HostAgentStatus').implement({
  description: "What the controller knows about a host's agent: whether it is connected, and what it last reported.",
  fields: (t) => ({
    hostId: t.exposeID('hostId', { description: 'The host.' }),
    online: t.exposeBoolean('online', {
      description: "The host's AGENT token holds a hostDesiredState subscription on some controller replica, seen within the last 30 seconds (by default).",
    }),
    connections: t.exposeInt('connections', {
      description: "Live hostDesiredState subscriptions of the agent; more than one while a reconnected agent's old connection is not yet noticed dead.",
    }),
    connectedAt: t.expose('connectedAt', { type: 'DateTime', nullable: true, description: 'Start of the newest live subscription; null while offline.' }),
    lastSeenAt: t.expose('lastSeenAt', {
      type: 'DateTime',
      nullable: true,
      description: 'Last connect, heartbeat (every 10 s by default while connected), disconnect or report.',
    }),
    appliedRevision: t.exposeInt('appliedRevision', {
      nullable: true,
      description: "The host's desired revision the agent last said it applied; behind Host.desiredRevision while changes are on their way.",
    }),
    appliedAt: t.expose('appliedAt', { type: 'DateTime', nullable: true, description: 'When the agent reported appliedRevision.' }),
    lastError: t.exposeString('lastError', { nullable: true, description: "The host-level error of the agent's last apply; null when it succeeded." }),
    agentVersion: t.exposeString('agentVersion', {
      nullable: true,
      description: 'The version the agent last reported, e.g. "0.1.0"; null: it never reported.',
    }),
    pluginId: t.exposeString('pluginId', { nullable: true, description: 'The backend plugin the agent runs.' }),
    discoveredInstances: t.field({
      type: [DiscoveredInstanceRef],
      description: 'Instances the agent last discovered on the host.',
      resolve: (s) => s.discoveredInstances,
    }),
    discoveredAt: t.expose('discoveredAt', { type: 'DateTime', nullable: true, description: 'When discoveredInstances was reported.' }),
    lastDriftAt: t.expose('lastDriftAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When the agent last found the host differing from what it had applied (and repaired it).',
    }),
    driftRepairs: t.exposeInt('driftRepairs', { description: 'How many times the agent repaired drift on the host.' }),
    startedFrom: t.field({
      type: AgentStartSourceEnum,
      nullable: true,
      description: "Where the agent's current run got its first desired state; null until an agent reports it.",
      resolve: (s) => s.startedFrom,
    }),
    cachedRevision: t.exposeInt('cachedRevision', {
      nullable: true,
      description: 'With startedFrom CACHE: the revision the agent applied from its cache at start (Host.desiredRevision may have moved on meanwhile).',
    }),
  }),
});

builder.objectField(HostRef, 'agent', (t) =>
  t.field({
    type: HostAgentStatusRef,
    description: "The host's agent: online, applied revision, last error, discovered instances, drift. Admins and the host's AGENT token.",
    resolve: (host, _a, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      if (!mayActForHostAgent(actor, host.id)) {
        throw new ForbiddenError(`Host.agent of host ${host.id} is for admins and that host's agent token`, 'hostId', host.id);
      }
      return ctx.loaders.hostAgent.load(host.id);
    },
  }),
);

const DiscoveredNicInput = builder.inputType('DiscoveredNicInput', {
  description: 'A network interface of a discovered instance.',
  fields: (t) => ({
    name: t.string({ required: true, description: '1-64 characters.' }),
    mac: t.string({ description: 'Six hex octets (any common spelling); absent for interfaces without one.' }),
    addresses: t.stringList({ required: true, description: 'At most 64: "10.0.0.2", "10.0.0.2/24", "2001:db8::2/64".' }),
  }),
});

const DiscoveredInstanceInput = builder.inputType('DiscoveredInstanceInput', {
  description: "An instance an agent's plugin found on the host.",
  fields: (t) => ({
    externalId: t.string({ required: true, description: "The backend's own id, 1-128 characters, unique in the report." }),
    name: t.string({ required: true, description: '1-255 characters.' }),
    running: t.boolean({ description: 'Whether the instance runs (omit when the backend cannot tell).' }),
    nics: t.field({ type: [DiscoveredNicInput], required: true, description: 'At most 64.' }),
  }),
});

const PortForwardCapabilitiesInput = builder.inputType('PortForwardCapabilitiesInput', {
  description: 'Port forwards the driver applies (PortForwardCapabilities).',
  fields: (t) => ({
    implementation: t.string({ required: true, description: '"native" or "dataplane".' }),
    protocols: t.stringList({ required: true, description: '"tcp" and/or "udp".' }),
    portRanges: t.boolean({ required: true, description: 'Whether a forward may span a port range.' }),
    ipv6: t.boolean({ required: true, description: 'Whether forwards to IPv6 targets are applied.' }),
    sourceAllowLists: t.boolean({ required: true, description: 'Whether a forward may be limited to source prefixes.' }),
    rateLimits: t.boolean({ description: 'Whether a forward may carry new-connection rate limits. Absent: false (agents of older versions).' }),
    multiTarget: t.boolean({ description: 'Whether a forward may balance over several targets. Absent: false (agents of older versions).' }),
  }),
});

const FirewallCapabilitiesInput = builder.inputType('FirewallCapabilitiesInput', {
  description: 'Firewall rules and policies the driver applies (FirewallCapabilities).',
  fields: (t) => ({
    implementation: t.string({ required: true, description: '"native" or "dataplane".' }),
    directions: t.stringList({ required: true, description: '"inbound" and/or "outbound".' }),
    actions: t.stringList({ required: true, description: 'Of "allow", "reject", "drop".' }),
    priorities: t.boolean({ required: true, description: 'Whether rule priorities are honoured.' }),
    ipv6: t.boolean({ required: true, description: 'Whether rules may match IPv6 prefixes.' }),
    icmp: t.boolean({ required: true, description: 'Whether rules may match ICMP.' }),
  }),
});

const ShapingCapabilitiesInput = builder.inputType('ShapingCapabilitiesInput', {
  description: 'Bandwidth limits the driver applies (ShapingCapabilities).',
  fields: (t) => ({
    implementation: t.string({ required: true, description: '"native" or "dataplane".' }),
    ingress: t.boolean({ required: true, description: 'Whether traffic into an instance can be limited.' }),
    egress: t.boolean({ required: true, description: 'Whether traffic out of an instance can be limited.' }),
    burst: t.boolean({ required: true, description: 'Whether an explicit burst is honoured.' }),
  }),
});

const NicCapabilitiesInput = builder.inputType('NicCapabilitiesInput', {
  description: 'What the driver does with NICs (NicCapabilities).',
  fields: (t) => ({
    max: t.int({ required: true, description: 'Most NICs per instance, 0-1024.' }),
    hotplug: t.boolean({ required: true, description: 'Whether NICs can be added to a running instance.' }),
    staticAddressing: t.boolean({ required: true, description: 'Whether the driver configures static addresses inside the instance.' }),
  }),
});

const DriverCapabilitiesInput = builder.inputType('DriverCapabilitiesInput', {
  description: "A driver's `DriverCapabilities` (@gatehouse/sdk); a null section: the feature is not supported.",
  fields: (t) => ({
    portForwards: t.field({ type: PortForwardCapabilitiesInput, description: 'Null or absent: no port forwards.' }),
    firewall: t.field({ type: FirewallCapabilitiesInput, description: 'Null or absent: no firewall.' }),
    shaping: t.field({ type: ShapingCapabilitiesInput, description: 'Null or absent: no bandwidth limits.' }),
    nics: t.field({ type: NicCapabilitiesInput, required: true, description: 'What it does with NICs.' }),
  }),
});

const DriverReportInput = builder.inputType('DriverReportInput', {
  description: 'The plugin an agent runs and what it can do.',
  fields: (t) => ({
    id: t.string({ required: true, description: 'The plugin id, e.g. "lxd".' }),
    version: t.string({ description: "The plugin's version, when it declares one." }),
    apiVersion: t.int({ required: true, description: 'The driver API version the plugin was built for.' }),
    capabilities: t.field({ type: DriverCapabilitiesInput, required: true, description: 'What the driver can apply.' }),
  }),
});

const ListeningProtocolEnum = builder.enumType('ListeningProtocol', {
  description: 'The transport protocol of a listening socket.',
  values: { TCP: { value: 'TCP', description: 'A TCP socket in LISTEN.' }, UDP: { value: 'UDP', description: 'A UDP socket bound to a port, connected to no peer.' } } as const,
});

const ListeningSocketInput = builder.inputType('ListeningSocketInput', {
  description: 'A socket listening on the host, as the agent read it from /proc/net (the port audit).',
  fields: (t) => ({
    protocol: t.field({ type: ListeningProtocolEnum, required: true, description: 'TCP or UDP.' }),
    address: t.string({ required: true, description: 'The bound address; "0.0.0.0" or "::" for every address.' }),
    port: t.int({ required: true, description: 'The port, 1-65535.' }),
    process: t.string({ description: "The owning process's name (1-64 characters) when the agent could read it." }),
    pid: t.int({ description: 'Its process id, when readable.' }),
  }),
});

const ListeningPortRef = builder.objectRef<ListeningSocketJson>('ListeningPort').implement({
  description: 'A port a service on the host itself listens on (the port audit): forwards on it are refused with PORT_CONFLICT.',
  fields: (t) => ({
    protocol: t.field({ type: ListeningProtocolEnum, description: 'TCP or UDP.', resolve: (s) => s.protocol }),
    address: t.exposeString('address', { description: 'The bound address; "0.0.0.0" or "::": every address of the host.' }),
    port: t.exposeInt('port', { description: 'The port.' }),
    process: t.exposeString('process', { nullable: true, description: 'The process name (e.g. "sshd"); null when the agent could not read it.' }),
    pid: t.exposeInt('pid', { nullable: true, description: 'Its process id; null when unreadable.' }),
  }),
});

builder.objectFields(HostRef, (t) => ({
  listeningPorts: t.field({
    type: [ListeningPortRef],
    nullable: true,
    description:
      "The ports services on the host listen on, as its agent last reported them with its discovery (the port audit); null until an agent reports them. Admins and the host's AGENT token.",
    resolve: async (host, _a, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      if (!mayActForHostAgent(actor, host.id)) {
        throw new ForbiddenError(`Host.listeningPorts of host ${host.id} is for admins and that host's agent token`, 'hostId', host.id);
      }
      return (await ctx.loaders.hostAgent.load(host.id)).listeningSockets;
    },
  }),
  listeningPortsAt: t.field({
    type: 'DateTime',
    nullable: true,
    description: 'When the agent last reported the listening ports; null until it did. Admins and the host\'s AGENT token.',
    resolve: async (host, _a, ctx) => {
      const actor = requireActor(ctx, { allowAgent: true });
      if (!mayActForHostAgent(actor, host.id)) {
        throw new ForbiddenError(`Host.listeningPortsAt of host ${host.id} is for admins and that host's agent token`, 'hostId', host.id);
      }
      return (await ctx.loaders.hostAgent.load(host.id)).listeningSocketsAt;
    },
  }),
}));

const ReportHostStatusInput = builder.inputType('ReportHostStatusInput', {
  description: "An agent's report about itself after an apply.",
  fields: (t) => ({
    hostId: t.id({ required: true, description: "The agent's host." }),
    appliedRevision: t.int({
      description:
        'The desired revision now applied on the host; not ahead of Host.desiredRevision. Absent or null: nothing applied since the agent started (the stored one stays). A revision below the one already reported is a late report and is ignored.',
    }),
    error: t.string({ description: 'The host-level error of this apply (at most 2000 characters); null when it succeeded.' }),
    agentVersion: t.string({ required: true, description: 'The agent\'s version, e.g. "0.1.0".' }),
    pluginId: t.string({ required: true, description: 'The id of the plugin the agent runs, e.g. "docker".' }),
    driver: t.field({
      type: DriverReportInput,
      description:
        "The plugin and its capabilities (stored as Host.driver). When they change, the host's objects the driver cannot apply become FAILED with CAPABILITY_NOT_SUPPORTED. Absent: unchanged.",
    }),
    discoveredInstances: t.field({
      type: [DiscoveredInstanceInput],
      description: 'Instances found on the host (at most 1000). Absent or null: unchanged since the last report; an empty list: none.',
    }),
    driftDetected: t.boolean({
      defaultValue: false,
      description: 'The agent found the host differing from what it had applied and repaired it (counts in driftRepairs).',
    }),
    startedFrom: t.field({
      type: AgentStartSourceEnum,
      description: "Where the agent's current run got its first desired state. Absent or null: unchanged.",
    }),
    cachedRevision: t.int({ description: 'With startedFrom CACHE (required then): the revision applied from the cache at start; null otherwise.' }),
    listeningSockets: t.field({
      type: [ListeningSocketInput],
      description: "The host's listening sockets (at most 4096; Host.listeningPorts). Absent or null: unchanged (agents before the port audit); an empty list: none.",
    }),
  }),
});

builder.mutationField('reportHostStatus', (t) =>
  t.field({
    type: HostAgentStatusRef,
    description:
      "For host agents: their status after an apply (revision, error, version, plugin, discovered instances, drift). The host's AGENT token or an admin.",
    args: { input: t.arg({ type: ReportHostStatusInput, required: true, description: 'The report.' }) },
    errors: resultOf('ReportHostStatus', 'agent', [ValidationError, ForbiddenError, NotFoundError]),
    // the protocol's input type (@gatehouse/agent-protocol): validated by the service, strings included
    resolve: (_r, { input }, ctx) => ctx.services.hostAgents.report(requireActor(ctx, { allowAgent: true }), input as ReportHostStatusWire),
  }),
);

builder.subscriptionField('hostAgentStatusChanged', (t) =>
  t.field({
    type: HostAgentStatusRef,
    description: 'Agent status changes of one host (or all) as they commit: connects, disconnects, reports, and agents going offline silently (admins only).',
    args: { hostId: t.arg.id({ description: 'Absent: every host.' }) },
    subscribe: (_r, args, ctx) => ctx.services.hostAgents.watch(requireActor(ctx), args.hostId ?? null),
    resolve: (status) => status,
  }),
);
