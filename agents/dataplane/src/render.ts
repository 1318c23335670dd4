/**
 * Renders a host's desired state into the content of the `inet gatehouse` table. This step covers
 * NAT port forwards: per address family, two maps keyed on `daddr . l4proto . dport` (one gives the
 * target address, one the target port), so a new connection costs two lookups however many
 * forwards exist. (nft 1.0.6's JSON parser cannot take a map with concatenated data — it refuses
 * its elements and crashes on the rule — hence two maps with plain data.) Source allow-lists,
 * firewall chains, hairpin and counters come next.
 */
import type { DesiredState } from '@gatehouse/sdk';
import type { NftCommand } from './nft.js';

/** The table Gatehouse owns on every host. */
export const TABLE = { family: 'inet', table: 'gatehouse' } as const;

/** One DNAT entry: host address . protocol . port → target address and port. */
export interface ForwardElement {
  key: { concat: [string, string, number] };
  address: string;
  port: number;
}

/** The DNAT entries of every forward of one address family, one per host address, protocol and port. */
export function forwardElements(state: DesiredState, family: 4 | 6): ForwardElement[] {
  const isFamily = (address: string) => address.includes(':') === (family === 6);
  const elements: ForwardElement[] = [];
  for (const instance of state.instances) {
    for (const f of instance.portForwards) {
      if (!isFamily(f.targetAddress)) continue;
      const hostAddresses = f.hostAddress ? [f.hostAddress] : state.publicAddresses.filter(isFamily);
      const protocols = f.protocol === 'both' ? ['tcp', 'udp'] : [f.protocol];
      for (const address of hostAddresses) {
        for (const protocol of protocols) {
          for (let i = 0; i <= f.hostPorts.end - f.hostPorts.start; i++) {
            elements.push({ key: { concat: [address, protocol, f.hostPorts.start + i] }, address: f.targetAddress, port: f.targetPorts.start + i });
          }
        }
      }
    }
  }
  return elements;
}

function forwardMaps(family: 4 | 6, elements: ForwardElement[]): NftCommand[] {
  const addressType = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
  const type = [addressType, 'inet_proto', 'inet_service'];
  const commands: NftCommand[] = [
    { add: { map: { ...TABLE, name: `fwd${family}_addr`, type, map: addressType } } },
    { add: { map: { ...TABLE, name: `fwd${family}_port`, type, map: 'inet_service' } } },
  ];
  if (elements.length > 0) {
    commands.push(
      { add: { element: { ...TABLE, name: `fwd${family}_addr`, elem: elements.map((e) => [e.key, e.address]) } } },
      { add: { element: { ...TABLE, name: `fwd${family}_port`, elem: elements.map((e) => [e.key, e.port]) } } },
    );
  }
  return commands;
}

function dnatRule(family: 4 | 6): NftCommand {
  const protocol = family === 4 ? 'ip' : 'ip6';
  const key = { concat: [{ payload: { protocol, field: 'daddr' } }, { meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }] };
  return {
    add: {
      rule: {
        ...TABLE,
        chain: 'prerouting',
        expr: [
          { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: family === 4 ? 'ipv4' : 'ipv6' } },
          { dnat: { family: protocol, addr: { map: { key, data: `@fwd${family}_addr` } }, port: { map: { key, data: `@fwd${family}_port` } } } },
        ],
      },
    },
  };
}

/** The table's content for `replaceTable`. */
export function renderRuleset(state: DesiredState): NftCommand[] {
  return [
    ...forwardMaps(4, forwardElements(state, 4)),
    ...forwardMaps(6, forwardElements(state, 6)),
    { add: { chain: { ...TABLE, name: 'prerouting', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } } },
    dnatRule(4),
    dnatRule(6),
  ];
}
