/**
 * What every dataplane-backed plugin does with an instance NIC's host-side interface, whatever
 * the backend (namespace veth, Docker veth, LXD veth): the limit in effect on it, whether its
 * shaping is as desired, and its counters from the instance's point of view.
 */
import { run, type Counter, type DesiredInstance, type DesiredState, type ExecTarget, type ObservedShaping } from '@gatehouse/sdk';
import { readShaping, shapingMatches, type ShapingSpec } from './tc.js';

/** Where a desired NIC is on the host. */
export interface NicPlacement {
  instanceId: string;
  nicId: string;
  hostInterface: string;
}

/** The limit in effect on one NIC: its own, else the instance-wide one; null when unlimited. */
export function shapingFor(instance: DesiredInstance, nicId: string): ShapingSpec | null {
  const limit = instance.bandwidth.find((b) => b.nicId === nicId) ?? instance.bandwidth.find((b) => b.nicId === null);
  if (!limit || (limit.ingressBps === null && limit.egressBps === null)) return null;
  return { ingressBps: limit.ingressBps, egressBps: limit.egressBps, ingressBurstBytes: limit.ingressBurstBytes, egressBurstBytes: limit.egressBurstBytes };
}

/** One line per placed NIC whose shaping differs from the desired state. */
export async function shapingDifferences(places: readonly NicPlacement[], desired: DesiredState, target: ExecTarget = {}): Promise<string[]> {
  const instances = new Map(desired.instances.map((i) => [i.id, i]));
  const differences: string[] = [];
  for (const place of places) {
    const instance = instances.get(place.instanceId);
    if (!instance) continue;
    if (!shapingMatches(shapingFor(instance, place.nicId), await readShaping(place.hostInterface, target)))
      differences.push(`shaping of ${place.hostInterface} differs`);
  }
  return differences;
}

/**
 * A NIC's counters read on its host-side interface, turned round: what the host side sends, the
 * instance receives. `epoch` is the interface's ifindex (`if<n>`): a re-created interface (a
 * restarted container's new veth) gets a new one, and its counters start from zero.
 */
export async function nicCounters(hostInterface: string, target: ExecTarget = {}): Promise<{ rx: Counter; tx: Counter; epoch: string } | undefined> {
  const [link] = JSON.parse(await run('ip', ['-j', '-s', 'link', 'show', 'dev', hostInterface], target)) as {
    ifindex: number;
    stats64: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
  }[];
  if (!link) return undefined;
  const { rx, tx } = link.stats64;
  return { rx: { bytes: tx.bytes, packets: tx.packets }, tx: { bytes: rx.bytes, packets: rx.packets }, epoch: `if${link.ifindex}` };
}

/** The shaping in effect on placed NICs, as `observe` reports it (unshaped NICs left out). */
export async function observeShaping(places: readonly NicPlacement[], target: ExecTarget = {}): Promise<ObservedShaping[]> {
  const shaping: ObservedShaping[] = [];
  for (const place of places) {
    const spec = await readShaping(place.hostInterface, target);
    if (spec && (spec.ingressBps !== null || spec.egressBps !== null))
      shaping.push({ instanceId: place.instanceId, nicId: place.nicId, ingressBps: spec.ingressBps, egressBps: spec.egressBps });
  }
  return shaping;
}
