/**
 * The desired-state compiler: a pure function from what the database holds for one host to the
 * document its agent applies. Everything is sorted, so the same rows always give the same JSON.
 */
import { DESIRED_STATE_API_VERSION, type DesiredInstance, type DesiredState } from '@gatehouse/sdk';
import type { BandwidthLimit } from '../services/bandwidth-service.js';
import { autoBurstBytes } from '../net/shaping.js';
import type { FirewallRule } from '../services/firewall-service.js';
import type { Host } from '../services/host-service.js';
import type { Instance, Nic } from '../services/ownership.js';
import type { Allocation, Pool } from '../services/pool-service.js';
import type { PortForward } from '../services/port-forward-service.js';
import { desiredBalance } from '../services/port-forward-balance.js';

/** Everything attached to one host, read in one consistent snapshot. */
export interface HostSnapshot {
  host: Host;
  instances: Instance[];
  nics: Nic[];
  addresses: Allocation[];
  pools: Pool[];
  firewallRules: FirewallRule[];
  bandwidth: BandwidthLimit[];
  portForwards: DesiredForwardRow[];
  /** Limits whose monthly quota is exceeded with THROTTLE this period (traffic_quota_states); absent: none. */
  throttledLimitIds?: ReadonlySet<string>;
  /** Instances the host's agent last discovered stopped: balanced forwards leave their targets out; absent: none. */
  stoppedInstanceIds?: ReadonlySet<string>;
}

/** The columns of a port forward the document needs (loading all of them costs 5x more at 60,000 rows). */
export type DesiredForwardRow = Pick<
  PortForward,
  | 'id'
  | 'instanceId'
  | 'protocol'
  | 'hostAddress'
  | 'hostPortStart'
  | 'hostPortEnd'
  | 'targetAddress'
  | 'targetPortStart'
  | 'sourceCidrs'
  | 'rateLimit'
  | 'balance'
  | 'protoLo'
>;

const byId = <T extends { id: string }>(a: T, b: T) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function groupBy<T>(rows: readonly T[], key: (row: T) => string | null): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const row of rows) {
    const k = key(row);
    if (k === null) continue;
    const list = map.get(k);
    if (list) list.push(row);
    else map.set(k, [row]);
  }
  return map;
}

/**
 * The throttle rate in force on a limit: its own throttle when its quota is exceeded with THROTTLE,
 * and the instance-wide limit's throttle on every NIC of the instance when that one is (the
 * lower of the two when both are); null when none is.
 */
function throttleOf(limits: readonly BandwidthLimit[], l: BandwidthLimit, throttled: ReadonlySet<string> | undefined): number | null {
  if (!throttled || throttled.size === 0) return null;
  const rates: number[] = [];
  if (throttled.has(l.id) && l.throttleBps !== null) rates.push(l.throttleBps);
  const wide = limits.find((x) => x.nicId === null);
  if (wide && wide !== l && throttled.has(wide.id) && wide.throttleBps !== null) rates.push(wide.throttleBps);
  return rates.length ? Math.min(...rates) : null;
}

/** A limit as its document entry: rates in force (a throttle caps both directions), bursts resolved. */
function desiredBandwidth(l: BandwidthLimit, throttleBps: number | null) {
  const capped = (bps: number | null) => (throttleBps === null ? bps : Math.min(bps ?? throttleBps, throttleBps));
  const ingressBps = capped(l.ingressBps);
  const egressBps = capped(l.egressBps);
  // a configured burst is kept for the configured rate; a throttled direction gets the automatic one
  const burst = (bps: number | null, configuredBps: number | null, configured: number | null) =>
    bps === null ? null : bps === configuredBps && configured !== null ? configured : autoBurstBytes(bps);
  return {
    id: l.id,
    nicId: l.nicId,
    ingressBps,
    egressBps,
    ingressBurstBytes: burst(ingressBps, l.ingressBps, l.ingressBurstBytes),
    egressBurstBytes: burst(egressBps, l.egressBps, l.egressBurstBytes),
    monthlyQuotaBytes: l.monthlyQuotaBytes,
    quotaAction: l.quotaAction,
    throttleBps: l.throttleBps,
  };
}

/** Compiles a host's desired state. */
export function compileDesiredState(s: HostSnapshot): DesiredState {
  const pools = new Map(s.pools.map((p) => [p.id, p]));
  const nicsOf = groupBy([...s.nics].sort(byId), (n) => n.instanceId);
  const addressesOf = groupBy([...s.addresses].sort(byId), (a) => a.nicId);
  const rulesOf = groupBy(
    s.firewallRules.filter((r) => r.enabled).sort((a, b) => a.direction.localeCompare(b.direction) || a.priority - b.priority || byId(a, b)),
    (r) => r.instanceId,
  );
  const limitsOf = groupBy(
    [...s.bandwidth].sort((a, b) => (a.nicId === null ? -1 : b.nicId === null ? 1 : byId(a, b))),
    (l) => l.instanceId,
  );
  const forwardsOf = groupBy(
    [...s.portForwards].sort((a, b) => a.hostPortStart - b.hostPortStart || a.protoLo - b.protoLo || byId(a, b)),
    (f) => f.instanceId,
  );

  const heldAddressIds = new Set(s.addresses.map((a) => a.id));
  const stopped = s.stoppedInstanceIds ?? new Set<string>();

  const instances: DesiredInstance[] = [...s.instances].sort(byId).map((i) => ({
    id: i.id,
    name: i.name,
    externalId: i.externalId,
    nics: (nicsOf.get(i.id) ?? []).map((n) => ({
      id: n.id,
      name: n.name,
      mac: n.mac,
      network: n.network,
      addresses: (addressesOf.get(n.id) ?? []).map((a) => {
        const pool = pools.get(a.poolId);
        const delegated = a.prefixLength !== 32 && a.prefixLength !== 128;
        return {
          address: a.address,
          prefixLength: delegated || !pool ? a.prefixLength : Number(pool.subnet.split('/')[1]),
          delegated,
          gateway: pool?.gateway ?? null,
          dns: pool?.dns ?? [],
        };
      }),
    })),
    firewall: {
      inboundPolicy: i.firewallInboundPolicy,
      outboundPolicy: i.firewallOutboundPolicy,
      rules: (rulesOf.get(i.id) ?? []).map((r) => ({
        id: r.id,
        direction: r.direction,
        protocol: r.protocol,
        sourceCidr: r.sourceCidr,
        destinationCidr: r.destinationCidr,
        ports: r.ports,
        action: r.action,
        priority: r.priority,
      })),
    },
    bandwidth: (limitsOf.get(i.id) ?? []).map((l) => desiredBandwidth(l, throttleOf(limitsOf.get(i.id) ?? [], l, s.throttledLimitIds))),
    portForwards: (forwardsOf.get(i.id) ?? []).map((f) => {
      const { targetAddress, balance } = desiredBalance(f.balance, f.targetAddress, heldAddressIds, stopped);
      return {
        id: f.id,
        protocol: f.protocol,
        hostAddress: f.hostAddress,
        hostPorts: { start: f.hostPortStart, end: f.hostPortEnd },
        targetAddress,
        targetPorts: { start: f.targetPortStart, end: f.targetPortStart + (f.hostPortEnd - f.hostPortStart) },
        sourceCidrs: f.sourceCidrs,
        // only when set: documents of forwards without limits or targets stay as agents of older versions know them
        ...(f.rateLimit ? { rateLimit: f.rateLimit } : {}),
        ...(balance ? { balance } : {}),
      };
    }),
  }));

  return {
    apiVersion: DESIRED_STATE_API_VERSION,
    hostId: s.host.id,
    hostName: s.host.name,
    revision: s.host.desiredRevision,
    publicAddresses: s.host.publicAddresses,
    instances,
  };
}
