/**
 * NAT path breakdown: what each part of Gatehouse's ruleset costs a new TCP connection through ONE
 * port forward, measured on its own. Every variant is a bare single-rule nft DNAT (one rule in an
 * `inet` nat prerouting chain) or that DNAT done Gatehouse's way (map lookups) with ONE more part
 * added; beside them the reference documents' single iptables rule, the hand-written nft rule in an
 * `ip` table, and Gatehouse's whole rendered ruleset for one forward. Same lab, load generator and
 * figure as bench/nat-scale.ts: connections per CPU-second of the load generator (the NAT path runs
 * in softirq in its context and is charged to it), median of the rounds, the order of the variants
 * alternating from round to round, the machine's load average noted with every run.
 *
 *   npx tsx bench/nat-breakdown.ts     (as root; npm run build -w @gatehouse/sdk first)
 *     BENCH_PARTS=iptables,nft-rule,… (default: all) BENCH_NAT_CONCURRENCY=64 BENCH_NAT_WARMUP_S=1
 *     BENCH_NAT_SECONDS=5 BENCH_NAT_ROUNDS=3
 */
import { NetnsLab, labAvailable } from '@gatehouse/sdk/testkit';
import { Prober, loadAverage, loadRun, median, natLab, perCpuSecond, stopChildren, type LoadFigures } from './nat-scale/harness.js';
import { NFT_RULE_TABLE, nftRuleContent } from './nat-scale/nft-rule.js';
import { natDesiredState } from './nat-scale/state.js';
import { applyNft, deleteTable, replaceTable, type NftCommand } from '../agents/dataplane/src/nft.js';
import { TABLE, renderRuleset } from '../agents/dataplane/src/render.js';

const CONCURRENCY = Number(process.env.BENCH_NAT_CONCURRENCY ?? 64);
const WARMUP_MS = Number(process.env.BENCH_NAT_WARMUP_S ?? 1) * 1000;
const DURATION_MS = Number(process.env.BENCH_NAT_SECONDS ?? 5) * 1000;
const ROUNDS = Number(process.env.BENCH_NAT_ROUNDS ?? 3);

const CLIENT = '198.51.100.100';
const PUBLIC = '198.51.100.1';
const PORT = 20_000;
const TARGET = { address: '10.0.0.5', port: 8080 };
const FORWARD = { hostAddress: PUBLIC, hostPort: PORT, targetAddress: TARGET.address, targetPort: TARGET.port };

// the variants' own table, so Gatehouse's is never touched by a hand-made part
const PARTS = { family: 'inet', table: 'bench_parts' } as const;

const nfproto = (family: 4 | 6) => ({ match: { op: '==', left: { meta: { key: 'nfproto' } }, right: family === 4 ? 'ipv4' : 'ipv6' } });
const ip = (family: 4 | 6) => (family === 4 ? 'ip' : 'ip6');
const forwardKey = (family: 4 | 6) => ({
  concat: [{ payload: { protocol: ip(family), field: 'daddr' } }, { meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }],
});
const chain = (name: string, type?: string, hook?: string, prio?: number): NftCommand => ({
  add: { chain: { ...PARTS, name, ...(type ? { type, hook, prio, policy: 'accept' } : {}) } },
});
const rule = (name: string, expr: unknown[]): NftCommand => ({ add: { rule: { ...PARTS, chain: name, expr } } });
const addressType = (family: 4 | 6) => (family === 4 ? 'ipv4_addr' : 'ipv6_addr');

/** The bare DNAT: one rule matching the forward's address and port. */
function singleRule(): NftCommand[] {
  return [
    chain('prerouting', 'nat', 'prerouting', -100),
    rule('prerouting', [
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: PUBLIC } },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: PORT } },
      { dnat: { family: 'ip', addr: TARGET.address, port: TARGET.port } },
    ]),
  ];
}

/** The DNAT Gatehouse's way: address and port maps keyed on daddr . l4proto . dport, one rule per family. */
function mapDnat(): NftCommand[] {
  const commands: NftCommand[] = [chain('prerouting', 'nat', 'prerouting', -100)];
  for (const family of [4, 6] as const) {
    const type = [addressType(family), 'inet_proto', 'inet_service'];
    commands.push(
      { add: { map: { ...PARTS, name: `fwd${family}_addr`, type, map: addressType(family) } } },
      { add: { map: { ...PARTS, name: `fwd${family}_port`, type, map: 'inet_service' } } },
    );
  }
  const key = { concat: [PUBLIC, 'tcp', PORT] };
  commands.push(
    { add: { element: { ...PARTS, name: 'fwd4_addr', elem: [[key, TARGET.address]] } } },
    { add: { element: { ...PARTS, name: 'fwd4_port', elem: [[key, TARGET.port]] } } },
  );
  for (const family of [4, 6] as const) {
    const k = forwardKey(family);
    commands.push(
      rule('prerouting', [
        nfproto(family),
        { dnat: { family: ip(family), addr: { map: { key: k, data: `@fwd${family}_addr` } }, port: { map: { key: k, data: `@fwd${family}_port` } } } },
      ]),
    );
  }
  return commands;
}

/** Per-forward counters: a set with a counter per element, looked up by every packet in a filter chain before DNAT. */
function counterSet(): NftCommand[] {
  const commands: NftCommand[] = [chain('fwd_sources', 'filter', 'prerouting', -150)];
  for (const family of [4, 6] as const) {
    const type = [addressType(family), 'inet_proto', 'inet_service'];
    commands.push({ add: { set: { ...PARTS, name: `fwd${family}_ctr`, type, stmt: [{ counter: null }] } } });
    commands.push(rule('fwd_sources', [nfproto(family), { match: { op: '==', left: forwardKey(family), right: `@fwd${family}_ctr` } }]));
  }
  commands.push({ add: { element: { ...PARTS, name: 'fwd4_ctr', elem: [{ elem: { val: { concat: [PUBLIC, 'tcp', PORT] }, comment: 'fwd_f0' } }] } } });
  return commands;
}

/** The forward's source allow-list alone: one rule dropping other sources, in a filter chain before DNAT. */
function allowList(): NftCommand[] {
  return [
    chain('fwd_sources', 'filter', 'prerouting', -150),
    rule('fwd_sources', [
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: PUBLIC } },
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { range: [PORT, PORT] } } },
      { match: { op: '!=', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { set: [{ prefix: { addr: '198.51.100.0', len: 24 } }] } } },
      { drop: null },
    ]),
  ];
}

/** Hairpin masquerade: a nat postrouting chain with one rule for the instances' subnet. */
function hairpin(): NftCommand[] {
  const inside = (field: string) => ({ match: { op: '==', left: { payload: { protocol: 'ip', field } }, right: { prefix: { addr: '10.0.0.5', len: 24 } } } });
  return [
    chain('postrouting', 'nat', 'postrouting', 100),
    rule('postrouting', [{ match: { op: 'in', left: { ct: { key: 'status' } }, right: 'dnat' } }, inside('saddr'), inside('daddr'), { masquerade: null }]),
  ];
}

/**
 * The forward hook as Gatehouse renders it for the 16 instances of bench/nat-scale.ts: the
 * instance counter maps (`counters`), established traffic accepted, the firewall verdict maps
 * (`dispatch`) jumping to per-instance chains holding `rules` before an accept policy.
 */
function forwardHook(parts: { counters: boolean; dispatch: boolean; rules: boolean }): NftCommand[] {
  const commands: NftCommand[] = [chain('forward', 'filter', 'forward', 0)];
  const instances = Array.from({ length: 16 }, (_, k) => ({ id: `i${k}`, address: `10.0.0.${5 + k}` }));
  if (parts.counters) {
    for (const direction of ['in', 'out'] as const) {
      for (const i of instances) commands.push({ add: { counter: { ...PARTS, name: `ctr_${direction}_${i.id}` } } });
      for (const family of [4, 6] as const) {
        const name = `ctr_${direction}${family}`;
        commands.push({ add: { map: { ...PARTS, name, type: addressType(family), map: 'counter' } } });
        if (family === 4) commands.push({ add: { element: { ...PARTS, name, elem: instances.map((i) => [i.address, `ctr_${direction}_${i.id}`]) } } });
        const field = direction === 'in' ? 'daddr' : 'saddr';
        commands.push(rule('forward', [nfproto(family), { counter: { map: { key: { payload: { protocol: ip(family), field } }, data: `@${name}` } } }]));
      }
    }
  }
  if (!parts.dispatch) return commands;
  commands.push(rule('forward', [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }]));
  for (const direction of ['in', 'out'] as const) {
    for (const i of instances) {
      const name = `fw_${direction}_${i.id}`;
      commands.push(chain(name));
      if (parts.rules && direction === 'in') {
        commands.push(
          rule(name, [
            { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
            { match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { set: [22] } } },
            { drop: null },
          ]),
          rule(name, [
            { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: '192.0.2.0', len: 24 } } } },
            { drop: null },
          ]),
          rule(name, [
            { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
            { match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { set: [TARGET.port] } } },
            { return: null },
          ]),
        );
      }
      commands.push(rule(name, [{ return: null }]));
    }
    for (const family of [4, 6] as const) {
      const name = `fw_${direction}${family}`;
      commands.push({ add: { map: { ...PARTS, name, type: addressType(family), map: 'verdict' } } });
      if (family === 4)
        commands.push({ add: { element: { ...PARTS, name, elem: instances.map((i) => [i.address, { jump: { target: `fw_${direction}_${i.id}` } }]) } } });
      const field = direction === 'in' ? 'daddr' : 'saddr';
      commands.push(rule('forward', [{ vmap: { key: { payload: { protocol: ip(family), field } }, data: `@${name}` } }]));
    }
  }
  return commands;
}

interface Part {
  name: string;
  what: string;
  install: () => NftCommand[] | 'iptables' | 'nft-rule' | 'gatehouse' | 'gatehouse-ctr';
}

const ALL_PARTS: Part[] = [
  { name: 'iptables', what: 'iptables-legacy: one -A PREROUTING -d A -p tcp --dport P -j DNAT rule', install: () => 'iptables' },
  { name: 'nft-rule', what: 'nft: the same rule in an ip nat chain', install: () => 'nft-rule' },
  { name: 'inet-rule', what: 'nft: the same rule in an inet nat chain (the base of the parts below)', install: singleRule },
  { name: 'map', what: 'DNAT through the address and port maps (both families)', install: mapDnat },
  { name: 'counter-set', what: 'map + per-forward counter set looked up in a filter prerouting chain', install: () => [...mapDnat(), ...counterSet()] },
  { name: 'allow-list', what: 'map + one allow-list rule in a filter prerouting chain', install: () => [...mapDnat(), ...allowList()] },
  { name: 'hairpin', what: 'map + hairpin masquerade rule in a nat postrouting chain', install: () => [...mapDnat(), ...hairpin()] },
  {
    name: 'forward-hook',
    what: 'map + an empty filter forward chain',
    install: () => [...mapDnat(), ...forwardHook({ counters: false, dispatch: false, rules: false })],
  },
  {
    name: 'instance-ctr',
    what: 'map + forward chain with the instance counter maps',
    install: () => [...mapDnat(), ...forwardHook({ counters: true, dispatch: false, rules: false })],
  },
  {
    name: 'dispatch',
    what: 'map + forward chain: established accept, verdict maps, policy-only chains',
    install: () => [...mapDnat(), ...forwardHook({ counters: false, dispatch: true, rules: false })],
  },
  {
    name: 'dispatch-rules',
    what: 'map + forward chain: established accept, verdict maps, 3 rules + policy',
    install: () => [...mapDnat(), ...forwardHook({ counters: false, dispatch: true, rules: true })],
  },
  {
    name: 'gatehouse',
    what: "Gatehouse's ruleset for the 1 forward (16 instances, no firewall rules) as the driver base keeps it (no instance counters)",
    install: () => 'gatehouse',
  },
  { name: 'gatehouse-ctr', what: 'the same with per-instance counters (as the ESXi plugin keeps it)', install: () => 'gatehouse-ctr' },
];

async function main(): Promise<void> {
  if (!(await labAvailable())) {
    console.error('nat-breakdown: needs root and `ip netns` (it builds network namespaces); nothing was measured');
    process.exitCode = 1;
    return;
  }
  const selected = process.env.BENCH_PARTS?.split(',');
  const parts = selected ? ALL_PARTS.filter((p) => selected.includes(p.name)) : ALL_PARTS;
  const lab = new NetnsLab();
  process.once('exit', stopChildren);
  let prober: Prober | undefined;
  try {
    const nat = await natLab(lab, { client: CLIENT, publicAddresses: [PUBLIC], target: TARGET });
    const netns = { netns: nat.host.name };
    prober = new Prober(nat.client);
    const install = async (part: Part) => {
      const what = part.install();
      if (what === 'iptables') {
        const restore = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'];
        const f = FORWARD;
        restore.push(
          `-A PREROUTING -d ${f.hostAddress} -p tcp --dport ${f.hostPort} -j DNAT --to-destination ${f.targetAddress}:${f.targetPort}`,
          'COMMIT',
          '',
        );
        await nat.host.exec('iptables-legacy-restore', [], { input: restore.join('\n') });
      } else if (what === 'nft-rule') await applyNft(replaceTable(NFT_RULE_TABLE.family, NFT_RULE_TABLE.name, nftRuleContent([FORWARD])), netns);
      else if (what === 'gatehouse' || what === 'gatehouse-ctr') {
        await applyNft(
          replaceTable(TABLE.family, TABLE.table, renderRuleset(natDesiredState([FORWARD], [PUBLIC]), { instanceCounters: what === 'gatehouse-ctr' })),
          netns,
        );
      } else await applyNft(replaceTable(PARTS.family, PARTS.table, what), netns);
    };
    const uninstall = async () => {
      await nat.host.exec('iptables-legacy', ['-t', 'nat', '-F']).catch(() => undefined);
      for (const t of [{ family: NFT_RULE_TABLE.family, table: NFT_RULE_TABLE.name }, { family: TABLE.family, table: TABLE.table }, PARTS]) {
        await deleteTable(t.family, t.table, netns);
      }
    };
    const runs: (LoadFigures & { part: string; load: string })[] = [];
    console.error(`nat-breakdown: lab ${lab.prefix}; ${ROUNDS} round(s) x ${parts.length} variants, ${DURATION_MS / 1000} s each`);
    for (let round = 0; round < ROUNDS; round++) {
      for (const part of round % 2 === 0 ? parts : [...parts].reverse()) {
        await install(part);
        try {
          const { connected } = prober.probe(PUBLIC, PORT, 5000);
          if ((await connected) === undefined) throw new Error(`${part.name}: the forward does not carry traffic`);
          const run = await loadRun(nat.client, FORWARD, nat.server.process.pid!, nat.conntrack, {
            concurrency: CONCURRENCY,
            warmupMs: WARMUP_MS,
            durationMs: DURATION_MS,
          });
          const load = await loadAverage();
          runs.push({ ...run, part: part.name, load });
          console.error(
            `  round ${round + 1} ${part.name.padEnd(15)} ${perCpuSecond(run).toFixed(0).padStart(6)} conn/cpu-s ${run.perSecond.toFixed(0).padStart(6)} conn/s  load ${run.cpuShare.toFixed(2)} server ${run.cpu.server.toFixed(2)} softirq ${run.cpu.softirq.toFixed(2)} others ${run.cpu.others.toFixed(2)}; load average ${load}`,
          );
        } finally {
          await uninstall();
        }
      }
    }
    const figure = (name: string) => median(runs.filter((r) => r.part === name).map(perCpuSecond));
    const base = figure('inet-rule');
    const mapFigure = figure('map');
    console.log(`\nNAT path breakdown: connections per CPU-second of the load generator through ONE forward, median of ${ROUNDS} rounds (order alternating)`);
    console.log('variant          conn/cpu-s (range)         vs iptables  vs inet rule  µs/conn vs inet rule  µs/conn vs map   load averages   what');
    for (const part of parts) {
      const xs = runs.filter((r) => r.part === part.name);
      const mid = figure(part.name);
      const us = (other: number) => (Number.isFinite(other) ? (1e6 / mid - 1e6 / other).toFixed(1) : '-');
      console.log(
        `${part.name.padEnd(16)} ${mid.toFixed(0).padStart(6)} (${Math.min(...xs.map(perCpuSecond)).toFixed(0)}-${Math.max(...xs.map(perCpuSecond)).toFixed(0)})`.padEnd(
          43,
        ) +
          `${(mid / figure('iptables')).toFixed(2).padStart(8)}x  ${(mid / base).toFixed(2).padStart(10)}x  ${us(base).padStart(20)}  ${us(mapFigure).padStart(15)}   ${xs
            .map((x) => x.load.split(' ')[0])
            .join(' ')
            .padEnd(14)}  ${part.what}`,
      );
    }
  } finally {
    prober?.close();
    stopChildren();
    await lab.cleanup();
  }
}

await main();
