/** Host drivers: the plugin each host's agent runs and what it can do (`Host.driver`), as the agent reported it. */
import type { DriverCapabilities } from '@gatehouse/sdk';
import type { HostDriverJson } from '../../db/schema.js';
import { builder } from '../builder.js';
import { ActionEnum, DirectionEnum } from './firewall.js';
import { HostRef } from './hosts.js';
import { ForwardProtocolEnum } from './port-forwards.js';

const ImplementationEnum = builder.enumType('DriverImplementation', {
  description: "How a driver provides a feature: NATIVE through the backend's own API, DATAPLANE through the Linux dataplane on the agent's host.",
  values: {
    NATIVE: { value: 'native', description: "Through the backend's own API (e.g. LXD network forwards, Proxmox VE firewall)." },
    DATAPLANE: { value: 'dataplane', description: "Through nftables and tc on the agent's host." },
  } as const,
});

type Caps = DriverCapabilities;

const PortForwardCapabilitiesRef = builder.objectRef<NonNullable<Caps['portForwards']>>('PortForwardCapabilities').implement({
  description: 'What port forwards the driver applies; others are refused with CAPABILITY_NOT_SUPPORTED.',
  fields: (t) => ({
    implementation: t.field({ type: ImplementationEnum, description: 'NATIVE or DATAPLANE.', resolve: (c) => c.implementation }),
    protocols: t.field({ type: [ForwardProtocolEnum], description: 'TCP and/or UDP (BOTH needs both).', resolve: (c) => [...c.protocols] }),
    portRanges: t.exposeBoolean('portRanges', { description: 'Whether a forward may span a port range.' }),
    ipv6: t.exposeBoolean('ipv6', { description: 'Whether forwards to IPv6 targets are applied.' }),
    sourceAllowLists: t.exposeBoolean('sourceAllowLists', { description: 'Whether a forward may be limited to source prefixes (sourceCidrs).' }),
    rateLimits: t.boolean({
      description: 'Whether a forward may carry new-connection rate limits (rateLimit); false for drivers that did not declare it.',
      resolve: (c) => c.rateLimits ?? false,
    }),
    multiTarget: t.boolean({
      description: 'Whether a forward may balance new connections over several targets (targets); false for drivers that did not declare it.',
      resolve: (c) => c.multiTarget ?? false,
    }),
  }),
});

const FirewallCapabilitiesRef = builder.objectRef<NonNullable<Caps['firewall']>>('FirewallCapabilities').implement({
  description: 'What firewall rules and policies the driver applies.',
  fields: (t) => ({
    implementation: t.field({ type: ImplementationEnum, description: 'NATIVE or DATAPLANE.', resolve: (c) => c.implementation }),
    directions: t.field({ type: [DirectionEnum], description: 'Directions rules may match.', resolve: (c) => [...c.directions] }),
    actions: t.field({ type: [ActionEnum], description: 'Actions of rules and policies.', resolve: (c) => [...c.actions] }),
    priorities: t.exposeBoolean('priorities', { description: 'Whether rule priorities are honoured.' }),
    ipv6: t.exposeBoolean('ipv6', { description: 'Whether rules may match IPv6 prefixes.' }),
    icmp: t.exposeBoolean('icmp', { description: 'Whether rules may match ICMP.' }),
  }),
});

const ShapingCapabilitiesRef = builder.objectRef<NonNullable<Caps['shaping']>>('ShapingCapabilities').implement({
  description: 'What bandwidth limits the driver applies.',
  fields: (t) => ({
    implementation: t.field({ type: ImplementationEnum, description: 'NATIVE or DATAPLANE.', resolve: (c) => c.implementation }),
    ingress: t.exposeBoolean('ingress', { description: 'Whether traffic into an instance can be limited (ingressMbps).' }),
    egress: t.exposeBoolean('egress', { description: 'Whether traffic out of an instance can be limited (egressMbps).' }),
    burst: t.exposeBoolean('burst', { description: 'Whether an explicit burst (ingressBurstKb, egressBurstKb) is honoured.' }),
  }),
});

const NicCapabilitiesRef = builder.objectRef<Caps['nics']>('NicCapabilities').implement({
  description: 'What the driver does with instance NICs.',
  fields: (t) => ({
    max: t.exposeInt('max', { description: 'Most NICs per instance.' }),
    hotplug: t.exposeBoolean('hotplug', { description: 'Whether NICs can be added to a running instance.' }),
    staticAddressing: t.exposeBoolean('staticAddressing', { description: 'Whether the driver configures the static addresses inside the instance.' }),
  }),
});

const DriverCapabilitiesRef = builder.objectRef<Caps>('DriverCapabilities').implement({
  description: "What a host's driver can apply. The controller refuses objects outside it with CAPABILITY_NOT_SUPPORTED.",
  fields: (t) => ({
    portForwards: t.field({
      type: PortForwardCapabilitiesRef,
      nullable: true,
      description: 'Null: no port forwards.',
      resolve: (c) => c.portForwards,
    }),
    firewall: t.field({ type: FirewallCapabilitiesRef, nullable: true, description: 'Null: no firewall.', resolve: (c) => c.firewall }),
    shaping: t.field({ type: ShapingCapabilitiesRef, nullable: true, description: 'Null: no bandwidth limits.', resolve: (c) => c.shaping }),
    nics: t.field({ type: NicCapabilitiesRef, description: 'What it does with NICs.', resolve: (c) => c.nics }),
  }),
});

const HostDriverRef = builder.objectRef<HostDriverJson>('HostDriver').implement({
  description: "The plugin a host's agent runs, as the agent last reported it.",
  fields: (t) => ({
    id: t.exposeString('id', { description: 'The plugin id (what Host.backend names).' }),
    version: t.exposeString('version', { nullable: true, description: "The plugin's version, when it declares one." }),
    apiVersion: t.exposeInt('apiVersion', { description: 'The driver API version the plugin was built for.' }),
    capabilities: t.field({ type: DriverCapabilitiesRef, description: 'What the driver can apply.', resolve: (d) => d.capabilities }),
  }),
});

builder.objectField(HostRef, 'driver', (t) =>
  t.field({
    type: HostDriverRef,
    nullable: true,
    description:
      "The host's driver and its capabilities; null until the host's agent first connected (until then every object is accepted, and stays PENDING).",
    resolve: (h) => h.driver,
  }),
);
