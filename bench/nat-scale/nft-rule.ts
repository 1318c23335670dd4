/**
 * The best hand-written nftables rule for one port forward, the nft equivalent of the reference
 * documents' `iptables -t nat -A PREROUTING -d ADDR -p tcp --dport P -j DNAT --to-destination IP:PORT`:
 * one rule in an `ip` family nat chain, seen by the first packet of each connection only.
 */
import type { NftCommand } from '../../agents/dataplane/src/nft.js';
import type { Forward } from './state.js';

/** The table the hand-written rule lives in (not Gatehouse's). */
export const NFT_RULE_TABLE = { family: 'ip', name: 'bench_nft_rule' } as const;

/** The table's content: a nat prerouting chain with one DNAT rule per forward, in order. */
export function nftRuleContent(forwards: readonly Forward[]): NftCommand[] {
  const table = { family: NFT_RULE_TABLE.family, table: NFT_RULE_TABLE.name };
  return [
    { add: { chain: { ...table, name: 'prerouting', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } } },
    ...forwards.map((f) => ({
      add: {
        rule: {
          ...table,
          chain: 'prerouting',
          expr: [
            { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: f.hostAddress } },
            { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: f.hostPort } },
            { dnat: { family: 'ip', addr: f.targetAddress, port: f.targetPort } },
          ],
        },
      },
    })),
  ];
}
