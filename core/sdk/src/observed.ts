/**
 * The canonical form of "what should be on the host" and the comparison with what a driver
 * observes. A driver's `observe` returns an `ObservedState`; `expectedObservation(desired)` builds
 * the same shape from the desired state; `diffObservation` lists the differences in words. An
 * empty list means no drift.
 */
import type { DesiredState } from './desired-state.js';
import type { ObservedFirewall, ObservedForward, ObservedShaping, ObservedState } from './driver.js';

const isV6 = (address: string) => address.includes(':');

/** What a driver that applied `desired` completely should observe. */
export function expectedObservation(desired: DesiredState): ObservedState {
  const forwards: ObservedForward[] = [];
  const firewalls: ObservedFirewall[] = [];
  const shaping: ObservedShaping[] = [];
  for (const instance of desired.instances) {
    for (const f of instance.portForwards) {
      const v6 = isV6(f.targetAddress);
      const hostAddresses = f.hostAddress ? [f.hostAddress] : desired.publicAddresses.filter((a) => isV6(a) === v6);
      const sourceCidrs = f.sourceCidrs.filter((c) => isV6(c) === v6).sort();
      for (const hostAddress of hostAddresses) {
        for (const protocol of f.protocol === 'both' ? (['tcp', 'udp'] as const) : [f.protocol]) {
          for (let i = 0; i <= f.hostPorts.end - f.hostPorts.start; i++) {
            forwards.push({
              protocol,
              hostAddress,
              hostPort: f.hostPorts.start + i,
              targetAddress: f.targetAddress,
              targetPort: f.targetPorts.start + i,
              sourceCidrs,
            });
          }
        }
      }
    }
    const rules = [...instance.firewall.rules]
      .sort((a, b) => (a.direction === b.direction ? 0 : a.direction === 'inbound' ? -1 : 1))
      .map(({ direction, protocol, sourceCidr, destinationCidr, ports, action }) => ({ direction, protocol, sourceCidr, destinationCidr, ports, action }));
    firewalls.push({ instanceId: instance.id, inboundPolicy: instance.firewall.inboundPolicy, outboundPolicy: instance.firewall.outboundPolicy, rules });
    for (const nic of instance.nics) {
      const limit = instance.bandwidth.find((b) => b.nicId === nic.id) ?? instance.bandwidth.find((b) => b.nicId === null);
      if (limit && (limit.ingressBps !== null || limit.egressBps !== null)) {
        shaping.push({ instanceId: instance.id, nicId: nic.id, ingressBps: limit.ingressBps, egressBps: limit.egressBps });
      }
    }
  }
  return sortObservation({ forwards, firewalls, shaping });
}

/** Sorts every list of an observation into the canonical order (drivers may call it on theirs). */
export function sortObservation(state: ObservedState): ObservedState {
  return {
    forwards: [...state.forwards].sort((a, b) => forwardKey(a).localeCompare(forwardKey(b))),
    firewalls: [...state.firewalls].sort((a, b) => a.instanceId.localeCompare(b.instanceId)),
    shaping: [...state.shaping].sort((a, b) => `${a.instanceId}/${a.nicId}`.localeCompare(`${b.instanceId}/${b.nicId}`)),
  };
}

function forwardKey(f: { protocol: string; hostAddress: string; hostPort: number }): string {
  return `${f.protocol} ${f.hostAddress} ${String(f.hostPort).padStart(5, '0')}`;
}

/**
 * The differences between what should be there and what is, in words (`forward tcp
 * 198.51.100.1:10022: expected → 10.0.0.5:22, found nothing`). Rates match within `rateTolerance`
 * (a fraction; tc stores rates in its own units and rounds).
 */
export function diffObservation(expected: ObservedState, actual: ObservedState, options: { rateTolerance?: number } = {}): string[] {
  const tolerance = options.rateTolerance ?? 0.01;
  const out: string[] = [];
  const describeForward = (f: ObservedForward) => `→ ${f.targetAddress}:${f.targetPort}${f.sourceCidrs.length > 0 ? ` from ${f.sourceCidrs.join(',')}` : ''}`;
  diffKeyed(
    expected.forwards,
    actual.forwards,
    (f) => `forward ${f.protocol} ${f.hostAddress.includes(':') ? `[${f.hostAddress}]` : f.hostAddress}:${f.hostPort}`,
    describeForward,
    (a, b) => describeForward(a) === describeForward(b),
    out,
  );
  const describeFirewall = (f: ObservedFirewall) => JSON.stringify({ in: f.inboundPolicy, out: f.outboundPolicy, rules: f.rules });
  diffKeyed(
    expected.firewalls,
    actual.firewalls,
    (f) => `firewall of instance ${f.instanceId}`,
    describeFirewall,
    (a, b) => describeFirewall(a) === describeFirewall(b),
    out,
  );
  const near = (a: number | null, b: number | null) => (a === null || b === null ? a === b : Math.abs(a - b) <= tolerance * a);
  diffKeyed(
    expected.shaping,
    actual.shaping,
    (s) => `shaping of instance ${s.instanceId} nic ${s.nicId}`,
    (s) => `in ${s.ingressBps ?? 'unlimited'} bit/s, out ${s.egressBps ?? 'unlimited'} bit/s`,
    (a, b) => near(a.ingressBps, b.ingressBps) && near(a.egressBps, b.egressBps),
    out,
  );
  return out;
}

function diffKeyed<T>(expected: T[], actual: T[], key: (t: T) => string, describe: (t: T) => string, same: (a: T, b: T) => boolean, out: string[]): void {
  const found = new Map(actual.map((a) => [key(a), a]));
  for (const e of expected) {
    const k = key(e);
    const a = found.get(k);
    found.delete(k);
    if (!a) out.push(`${k}: expected ${describe(e)}, found nothing`);
    else if (!same(e, a)) out.push(`${k}: expected ${describe(e)}, found ${describe(a)}`);
  }
  for (const [k, a] of found) out.push(`${k}: not expected, found ${describe(a)}`);
}
