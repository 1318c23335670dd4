/**
 * Whether a driver's declared capabilities cover an object. Pure: the controller asks it before
 * accepting an object (and answers CAPABILITY_NOT_SUPPORTED), the agent asks it before handing a
 * document to its driver (an object the driver cannot apply is reported failed, never dropped
 * silently). Each check returns the first capability the object needs and the driver lacks.
 */
import type { DesiredBalance, DesiredPortForward, DesiredRateLimit, DesiredState, FirewallAction, PortRange } from './desired-state.js';
import type { DriverCapabilities, ObjectResult } from './driver.js';

/** A capability an object needs and the driver does not declare. */
export interface CapabilityViolation {
  /** The capability's key below `capabilities`, e.g. `portForwards.ipv6`. */
  capability: string;
  /** What is asked for, in words: "IPv6 port forwards". */
  feature: string;
  /** The object's field that asks for it (`hostAddress`, `protocol`, `ingressBps`). */
  field: string;
  /** That field's value, as text. */
  value: string;
}

/** What a port forward asks of a driver. */
export interface ForwardNeeds {
  protocol: 'tcp' | 'udp' | 'both';
  /** Whether the forward is IPv6 (its target is an IPv6 address). */
  ipv6: boolean;
  /** The target's address, for the message. */
  targetAddress: string;
  hostPorts: PortRange | null;
  targetPorts: PortRange;
  sourceCidrs: readonly string[];
  /** Its new-connection rate limits, if any. */
  rateLimit?: DesiredRateLimit | null;
  /** Its targets when it balances over several, if any. */
  balance?: DesiredBalance | null;
}

/** What a firewall rule asks of a driver. */
export interface FirewallRuleNeeds {
  direction: 'inbound' | 'outbound';
  action: FirewallAction;
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  sourceCidr: string | null;
  destinationCidr: string | null;
}

/** What a bandwidth limit asks of a driver (null: not limited). */
export interface BandwidthNeeds {
  ingressBps: number | null;
  egressBps: number | null;
  ingressBurstBytes: number | null;
  egressBurstBytes: number | null;
}

const violation = (capability: string, feature: string, field: string, value: unknown): CapabilityViolation => ({
  capability,
  feature,
  field,
  value: typeof value === 'string' ? value : JSON.stringify(value),
});

const rangeText = (r: PortRange): string => (r.start === r.end ? String(r.start) : `${r.start}-${r.end}`);

/** The first capability a port forward needs that `caps` lacks. */
export function checkPortForward(caps: DriverCapabilities, f: ForwardNeeds): CapabilityViolation | undefined {
  const pf = caps.portForwards;
  if (!pf) return violation('portForwards', 'port forwards', 'protocol', f.protocol);
  for (const p of f.protocol === 'both' ? (['tcp', 'udp'] as const) : [f.protocol]) {
    if (!pf.protocols.includes(p)) return violation(`portForwards.protocols`, `${p.toUpperCase()} port forwards`, 'protocol', f.protocol);
  }
  if (f.ipv6 && !pf.ipv6) return violation('portForwards.ipv6', 'IPv6 port forwards', 'targetAddress', f.targetAddress);
  if (!pf.portRanges) {
    if (f.targetPorts.end > f.targetPorts.start) return violation('portForwards.portRanges', 'port ranges', 'targetPort', rangeText(f.targetPorts));
    if (f.hostPorts && f.hostPorts.end > f.hostPorts.start) return violation('portForwards.portRanges', 'port ranges', 'hostPort', rangeText(f.hostPorts));
  }
  if (f.sourceCidrs.length > 0 && !pf.sourceAllowLists)
    return violation('portForwards.sourceAllowLists', 'source allow-lists', 'sourceCidrs', f.sourceCidrs.join(','));
  if (f.rateLimit && !pf.rateLimits) return violation('portForwards.rateLimits', 'connection rate limits', 'rateLimit', f.rateLimit);
  if (f.balance && !pf.multiTarget)
    return violation('portForwards.multiTarget', 'forwards to several targets', 'targets', f.balance.targets.map((t) => `${t.address}*${t.weight}`).join(','));
  return undefined;
}

/** The first capability a firewall rule needs that `caps` lacks. */
export function checkFirewallRule(caps: DriverCapabilities, r: FirewallRuleNeeds): CapabilityViolation | undefined {
  const fw = caps.firewall;
  if (!fw) return violation('firewall', 'firewalls', 'direction', r.direction);
  if (!fw.directions.includes(r.direction)) return violation('firewall.directions', `${r.direction} firewall rules`, 'direction', r.direction);
  if (!fw.actions.includes(r.action)) return violation('firewall.actions', `the firewall action ${r.action}`, 'action', r.action);
  if (r.protocol === 'icmp' && !fw.icmp) return violation('firewall.icmp', 'ICMP firewall rules', 'protocol', r.protocol);
  if (!fw.ipv6) {
    if (r.sourceCidr?.includes(':')) return violation('firewall.ipv6', 'IPv6 firewall rules', 'sourceCidr', r.sourceCidr);
    if (r.destinationCidr?.includes(':')) return violation('firewall.ipv6', 'IPv6 firewall rules', 'destinationCidr', r.destinationCidr);
  }
  return undefined;
}

/** The first capability a firewall policy (what unmatched traffic gets) needs that `caps` lacks. */
export function checkFirewallPolicy(caps: DriverCapabilities, direction: 'inbound' | 'outbound', action: FirewallAction): CapabilityViolation | undefined {
  const field = `${direction}Policy`;
  if (!caps.firewall) return action === 'allow' ? undefined : violation('firewall', 'firewalls', field, action);
  if (!caps.firewall.directions.includes(direction) && action !== 'allow')
    return violation('firewall.directions', `${direction} firewall policies`, field, action);
  if (!caps.firewall.actions.includes(action)) return violation('firewall.actions', `the firewall action ${action}`, field, action);
  return undefined;
}

/** The first capability a bandwidth limit needs that `caps` lacks. */
export function checkBandwidth(caps: DriverCapabilities, b: BandwidthNeeds): CapabilityViolation | undefined {
  const sh = caps.shaping;
  const first = b.ingressBps !== null ? 'ingressBps' : 'egressBps';
  if (!sh) return violation('shaping', 'bandwidth limits', first, b[first]);
  if (b.ingressBps !== null && !sh.ingress) return violation('shaping.ingress', 'ingress shaping', 'ingressBps', b.ingressBps);
  if (b.egressBps !== null && !sh.egress) return violation('shaping.egress', 'egress shaping', 'egressBps', b.egressBps);
  if (!sh.burst) {
    if (b.ingressBurstBytes !== null) return violation('shaping.burst', 'burst', 'ingressBurstBytes', b.ingressBurstBytes);
    if (b.egressBurstBytes !== null) return violation('shaping.burst', 'burst', 'egressBurstBytes', b.egressBurstBytes);
  }
  return undefined;
}

/** Whether an instance may have `count` NICs, `adding` of them to it while it runs (`running`). */
export function checkNics(caps: DriverCapabilities, count: number, change?: { adding: boolean; running: boolean }): CapabilityViolation | undefined {
  if (count > caps.nics.max) return violation('nics.max', `more than ${caps.nics.max} NICs per instance`, 'nics', String(count));
  if (change?.adding && change.running && !caps.nics.hotplug) return violation('nics.hotplug', 'adding NICs to a running instance', 'nics', String(count));
  return undefined;
}

/** Whether an address or CIDR is IPv6. */
export function isIpv6(address: string): boolean {
  return address.includes(':');
}

/** What a desired forward asks of a driver. */
export function forwardNeeds(f: DesiredPortForward): ForwardNeeds {
  return { ...f, ipv6: isIpv6(f.targetAddress) };
}

/** The results, as `apply` would report them, of every object of `desired` that `caps` cannot apply. */
export function unsupportedObjects(caps: DriverCapabilities, desired: DesiredState, driverId: string): ObjectResult[] {
  const out: ObjectResult[] = [];
  const fail = (objectType: ObjectResult['objectType'], objectId: string, v: CapabilityViolation | undefined) => {
    if (!v) return;
    out.push({ objectType, objectId, status: 'failed', error: { code: 'CAPABILITY_NOT_SUPPORTED', message: capabilityMessage(driverId, v), path: v.field } });
  };
  // a driver that takes every kind of forward is not asked about each of tens of thousands
  const anyForward = takesEveryForward(caps);
  for (const instance of desired.instances) {
    if (!anyForward) for (const f of instance.portForwards) fail('port_forward', f.id, checkPortForward(caps, forwardNeeds(f)));
    for (const r of instance.firewall.rules) fail('firewall_rule', r.id, checkFirewallRule(caps, r));
    for (const b of instance.bandwidth) fail('bandwidth_limit', b.id, checkBandwidth(caps, b));
    instance.nics.forEach((n, i) => fail('nic', n.id, checkNics(caps, i + 1)));
  }
  return out;
}

/** Whether `checkPortForward` passes every forward: each protocol, IPv6, ranges, allow-lists, rate limits and several targets. */
export function takesEveryForward(caps: DriverCapabilities): boolean {
  const pf = caps.portForwards;
  return (
    !!pf &&
    pf.protocols.includes('tcp') &&
    pf.protocols.includes('udp') &&
    pf.ipv6 &&
    pf.portRanges &&
    pf.sourceAllowLists &&
    !!pf.rateLimits &&
    !!pf.multiTarget
  );
}

/** "its driver lxd does not support IPv6 port forwards (capabilities.portForwards.ipv6)". */
export function capabilityMessage(driverId: string, v: CapabilityViolation): string {
  return `its driver ${driverId} does not support ${v.feature} (capabilities.${v.capability})`;
}

/** `desired` without the objects listed in `unsupported` (the agent applies the rest). */
export function withoutObjects(desired: DesiredState, unsupported: readonly ObjectResult[]): DesiredState {
  if (unsupported.length === 0) return desired;
  const gone = new Set(unsupported.map((o) => o.objectId));
  return {
    ...desired,
    instances: desired.instances.map((i) => ({
      ...i,
      nics: i.nics.filter((n) => !gone.has(n.id)),
      portForwards: i.portForwards.filter((f) => !gone.has(f.id)),
      firewall: { ...i.firewall, rules: i.firewall.rules.filter((r) => !gone.has(r.id)) },
      bandwidth: i.bandwidth.filter((b) => !gone.has(b.id) && (b.nicId === null || !gone.has(b.nicId))),
    })),
  };
}
