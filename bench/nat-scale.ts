/**
 * NAT scale benchmark: what a new TCP connection through ONE port forward costs when 1, 10,000,
 * 60,000 or (BENCH_NAT_SIZES=1,250000, issue 20's row) 250,000 forwards are installed, for Gatehouse's dataplane (forwards as elements of two nft maps
 * and a counter set keyed on `daddr . l4proto . dport`, rendered from a DesiredState and applied in
 * one transaction)
 * against the reference documents' linear chain (one `iptables -t nat -A PREROUTING -d ADDR -p tcp
 * --dport P -j DNAT --to-destination IP:PORT` per forward, loaded with iptables-legacy-restore;
 * the measured forward is the LAST rule, the worst case for a linear chain), and at the smallest size
 * also against the best hand-written nft rule (bench/nat-scale/nft-rule.ts). All run in the same
 * process on the same lab, one variant's rules installed at a time, rounds alternating the order.
 *
 * The lab (network namespaces, deleted at the end, on failure and on Ctrl-C):
 *   client 198.51.100.100 ── host 198.51.100.1-4 (ip_forward, the NAT under test) 10.0.0.1 ── instance 10.0.0.5:8080
 * A load generator in the client namespace (one node process, BENCH_NAT_CONCURRENCY connections in
 * flight) connects to the host's public address:port, reads the server's byte and resets the
 * connection; connections per second are counted over BENCH_NAT_SECONDS after a warm-up. The
 * server in the instance namespace is one node process that writes one byte and ends. The rate is
 * CPU-bound (2 cores for load generator, server and kernel, and shared with whatever else runs), so
 * the CPU of every process over the window is sampled from /proc and a second figure is printed:
 * connections per CPU-second of the load generator, whose context the NAT path (softirq) runs in.
 * Conntrack entries in the host namespace are read before and after each window; the table is
 * emptied (`conntrack -F`) before each window, so no variant pays for the previous one's entries.
 *
 * Also measured: the time to install 10,000 forwards from empty (one nft transaction; one restore;
 * one `iptables -t nat -A` per rule, the reference documents' way), and with 60,000 forwards
 * installed, the time from issuing ONE incremental change adding a forward to the first connection
 * that gets through it (the dataplane part of "createPortForward → first connection"): for
 * Gatehouse, `Dataplane.apply` of the desired state with the forward added (its diff and its one
 * nft transaction), the way the agent applies a new revision.
 *
 *   npx tsx bench/nat-scale.ts     (as root, also the last step of `npm run bench`; npm run build -w @gatehouse/sdk first)
 *     BENCH_NAT_SIZES=1,10000,60000 BENCH_NAT_CONCURRENCY=64 BENCH_NAT_WARMUP_S=1 BENCH_NAT_SECONDS=5
 *     BENCH_NAT_ROUNDS=3 BENCH_NAT_TRIALS=20 BENCH_NAT_IPTABLES=legacy|nft BENCH_NAT_PER_RULE_BUDGET_S=300
 *     BENCH_NAT_LOAD_ONLY=1 (the connection rates alone)
 * What each part of Gatehouse's ruleset costs on its own: bench/nat-breakdown.ts.
 */
import type { DesiredState } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { measureEndToEnd, type EndToEndResult } from './nat-scale/end-to-end.js';
import {
  Prober,
  loadAverage,
  loadRun,
  median,
  msSince,
  natLab,
  nowNs,
  percentile,
  perCpuSecond,
  sequential,
  stopChildren,
  timedMs,
  type LoadFigures,
} from './nat-scale/harness.js';
import { NFT_RULE_TABLE, nftRuleContent } from './nat-scale/nft-rule.js';
import { INSTANCES, instanceAddress, natDesiredState, type Forward } from './nat-scale/state.js';
import { Dataplane } from '../agents/dataplane/src/dataplane.js';
import { applyNft, deleteTable, replaceTable } from '../agents/dataplane/src/nft.js';
import { TABLE, renderRuleset } from '../agents/dataplane/src/render.js';

const SIZES = (process.env.BENCH_NAT_SIZES ?? '1,10000,60000').split(',').map(Number);
const CONCURRENCY = Number(process.env.BENCH_NAT_CONCURRENCY ?? 64);
const WARMUP_MS = Number(process.env.BENCH_NAT_WARMUP_S ?? 1) * 1000;
const DURATION_MS = Number(process.env.BENCH_NAT_SECONDS ?? 5) * 1000;
const ROUNDS = Number(process.env.BENCH_NAT_ROUNDS ?? 3);
const TRIALS = Number(process.env.BENCH_NAT_TRIALS ?? 20);
const PER_RULE_BUDGET_MS = Number(process.env.BENCH_NAT_PER_RULE_BUDGET_S ?? 300) * 1000;
const IPTABLES_FLAVOUR = process.env.BENCH_NAT_IPTABLES === 'nft' ? 'nft' : 'legacy';
const IPTABLES = `iptables-${IPTABLES_FLAVOUR}`;
const IPTABLES_RESTORE = `iptables-${IPTABLES_FLAVOUR}-restore`;
// only the connection rates (step 1), without install times, latencies and the end-to-end run
const LOAD_ONLY = process.env.BENCH_NAT_LOAD_ONLY === '1';
const INSTALL_SIZE = 10_000;
// the table as the driver base keeps it (the Linux, Docker, LXD and Proxmox plugins): no per-instance counters
const DRIVER_RENDER = { instanceCounters: false } as const;
const LATENCY_SIZE = Math.max(...SIZES);

// host ports are unique per public address and protocol: 62,500 ports on each of four addresses
// (250,000 forwards, issue 20's host with four public addresses)
const PUBLIC_ADDRESSES = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
const CLIENT_ADDRESS = '198.51.100.100';
const FIRST_PORT = 1_024;
const PORTS_PER_ADDRESS = 62_500;
const TARGET = { address: '10.0.0.5', port: 8080 };
// ports the latency trials add: outside every installed forward
const TRIAL_ADDRESS = PUBLIC_ADDRESSES[0]!;
const TRIAL_FIRST_PORT = 64_000;

type Variant = 'gatehouse' | 'baseline';
/** The load runs' variants: also the hand-written nft rule, at the smallest size only. */
type LoadVariant = Variant | 'nft-rule';

/**
 * N forwards; the last one is the measured forward to the instance's server (the last rule of the
 * linear chain), the others go to the other instances' addresses and are never used.
 */
function forwardsOf(n: number): Forward[] {
  if (n > PUBLIC_ADDRESSES.length * PORTS_PER_ADDRESS) throw new Error(`at most ${PUBLIC_ADDRESSES.length * PORTS_PER_ADDRESS} forwards fit the lab`);
  // spread evenly over the addresses
  const perAddress = Math.ceil(n / PUBLIC_ADDRESSES.length);
  return Array.from({ length: n }, (_, i) => ({
    hostAddress: PUBLIC_ADDRESSES[Math.floor(i / perAddress)]!,
    hostPort: FIRST_PORT + (i % perAddress),
    targetAddress: i === n - 1 ? TARGET.address : instanceAddress(i % INSTANCES),
    targetPort: TARGET.port,
  }));
}

function desiredState(forwards: readonly Forward[]): DesiredState {
  return natDesiredState(forwards, PUBLIC_ADDRESSES);
}

/** The reference documents' rule for one forward, as arguments after `-A` / `-I` / `-D`. */
function iptablesRule(f: Forward): string[] {
  return [
    'PREROUTING',
    '-d',
    f.hostAddress,
    '-p',
    'tcp',
    '--dport',
    String(f.hostPort),
    '-j',
    'DNAT',
    '--to-destination',
    `${f.targetAddress}:${f.targetPort}`,
  ];
}

/** An iptables-restore file replacing the nat table with the linear chain, rules in order. */
function restoreFile(forwards: readonly Forward[]): string {
  const lines = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'];
  for (const f of forwards) lines.push(`-A ${iptablesRule(f).join(' ')}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** One load run's figures. */
interface LoadRun extends LoadFigures {
  variant: LoadVariant;
  /** The machine's load averages when the run ended. */
  load: string;
  n: number;
}

async function main(): Promise<void> {
  if (!(await labAvailable())) {
    console.error('nat-scale: needs root and `ip netns` (it builds network namespaces); nothing was measured');
    process.exitCode = 1;
    return;
  }
  const lab = new NetnsLab();
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\nnat-scale: ${signal}, stopping helpers and deleting the lab's namespaces (their rules go with them)`);
    stopChildren();
    // exit runs the lab's synchronous cleanup
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', stopChildren);

  let host: LabNamespace | undefined;
  let prober: Prober | undefined;
  try {
    const nat = await natLab(lab, { client: CLIENT_ADDRESS, publicAddresses: PUBLIC_ADDRESSES, target: TARGET });
    host = nat.host;
    const { client, server, conntrack } = nat;
    prober = new Prober(client);
    const hostNs = host;
    const target: ExecTargetRun = (command, args, options) => hostNs.exec(command, args, options);

    const conntrackMax = Number((await target('cat', ['/proc/sys/net/netfilter/nf_conntrack_max'])).trim());
    const netnsExecMs = median(await sequential(20, () => timedMs(() => target('true', []))));

    const install = async (variant: LoadVariant, forwards: readonly Forward[]) => {
      if (variant === 'gatehouse')
        await applyNft(replaceTable(TABLE.family, TABLE.table, renderRuleset(desiredState(forwards), DRIVER_RENDER)), { netns: hostNs.name });
      else if (variant === 'nft-rule')
        await applyNft(replaceTable(NFT_RULE_TABLE.family, NFT_RULE_TABLE.name, nftRuleContent(forwards)), { netns: hostNs.name });
      else await target(IPTABLES_RESTORE, [], { input: restoreFile(forwards), timeoutMs: 120_000 });
    };
    const uninstall = async (variant: LoadVariant) => {
      if (variant === 'gatehouse') await deleteTable(TABLE.family, TABLE.table, { netns: hostNs.name });
      else if (variant === 'nft-rule') await deleteTable(NFT_RULE_TABLE.family, NFT_RULE_TABLE.name, { netns: hostNs.name });
      else await target(IPTABLES, ['-t', 'nat', '-F']);
    };
    const reachable = async (f: Forward) => {
      const { connected } = prober!.probe(f.hostAddress, f.hostPort, 5000);
      if ((await connected) === undefined) throw new Error(`the measured forward ${f.hostAddress}:${f.hostPort} does not carry traffic`);
    };

    // 1. connections per second through one forward, with N forwards installed
    console.error(`nat-scale: lab ${lab.prefix}; ${ROUNDS} round(s) x ${SIZES.join('/')} forwards x 2 variants, ${DURATION_MS / 1000} s each`);
    const runs: LoadRun[] = [];
    const installMs: Record<LoadVariant, Map<number, number[]>> = { gatehouse: new Map(), baseline: new Map(), 'nft-rule': new Map() };
    for (let round = 0; round < ROUNDS; round++) {
      for (const n of SIZES) {
        // the hand-written nft rule is one rule: measured beside the smallest size only
        const variants: LoadVariant[] = n === SIZES[0] ? ['gatehouse', 'baseline', 'nft-rule'] : ['gatehouse', 'baseline'];
        const order = round % 2 === 0 ? variants : [...variants].reverse();
        for (const variant of order) {
          const forwards = forwardsOf(n);
          const measured = forwards[forwards.length - 1]!;
          const ms = await timedMs(() => install(variant, forwards));
          installMs[variant].set(n, [...(installMs[variant].get(n) ?? []), ms]);
          try {
            await reachable(measured);
            const run = await loadRun(client, measured, server.process.pid!, conntrack, {
              concurrency: CONCURRENCY,
              warmupMs: WARMUP_MS,
              durationMs: DURATION_MS,
            });
            const load = await loadAverage();
            runs.push({ ...run, variant, n, load });
            console.error(
              `  round ${round + 1} ${variant.padEnd(9)} N=${String(n).padEnd(6)} ${run.perSecond.toFixed(0).padStart(6)} conn/s  cores: load ${run.cpuShare.toFixed(2)} server ${run.cpu.server.toFixed(2)} softirq ${run.cpu.softirq.toFixed(2)} others ${run.cpu.others.toFixed(2)} (${run.cpu.top}) of busy ${run.cpu.busy.toFixed(2)}; conntrack ${run.conntrackBefore}→${run.conntrackAfter}; load average ${load}${failureText(run.failures)}`,
            );
          } finally {
            await uninstall(variant);
          }
        }
      }
    }

    if (LOAD_ONLY) {
      reportLoad(runs, conntrackMax);
      return;
    }

    // 2. installing 10,000 forwards from empty
    console.error(`nat-scale: install time of ${INSTALL_SIZE} forwards`);
    const installForwards = forwardsOf(INSTALL_SIZE);
    const gatehouseInstall = await sequential(3, async () => {
      const ms = await timedMs(() => install('gatehouse', installForwards));
      await uninstall('gatehouse');
      return ms;
    });
    const renderMs = median(await sequential(3, () => timedMs(async () => renderRuleset(desiredState(installForwards), DRIVER_RENDER))));
    const restoreInstall = await sequential(3, async () => {
      const ms = await timedMs(() => install('baseline', installForwards));
      await uninstall('baseline');
      return ms;
    });
    const perRule = await perRuleInstall(target, installForwards);
    await uninstall('baseline');

    // 4. one new forward with LATENCY_SIZE installed: change issued → first connection through it
    console.error(`nat-scale: ${TRIALS} trials of one new forward with ${LATENCY_SIZE} installed`);
    const latency: Record<Variant, { toConnection: number[]; command: number[]; remove: number[] }> = {
      gatehouse: { toConnection: [], command: [], remove: [] },
      baseline: { toConnection: [], command: [], remove: [] },
    };
    const installed = forwardsOf(LATENCY_SIZE);
    const installedState = desiredState(installed);
    // the agent's way: one Dataplane applying each new revision (the first replaces the table)
    const dataplane = new Dataplane({ netns: hostNs.name }, DRIVER_RENDER);
    for (const variant of ['gatehouse', 'baseline'] as const) {
      if (variant === 'gatehouse') await dataplane.apply(installedState);
      else await install(variant, installed);
      try {
        for (let t = 0; t < TRIALS; t++) {
          const added: Forward = { hostAddress: TRIAL_ADDRESS, hostPort: TRIAL_FIRST_PORT + t, targetAddress: TARGET.address, targetPort: TARGET.port };
          // the next revision is built before the clock starts: the agent receives it ready-made
          const withAdded = { ...desiredState([...installed, added]), revision: 2 + 2 * t };
          const add = async () => {
            if (variant === 'baseline') return target(IPTABLES, ['-t', 'nat', '-A', ...iptablesRule(added)]);
            const result = await dataplane.apply(withAdded);
            if (result.mode !== 'incremental') throw new Error(`gatehouse: adding one forward was applied as ${result.mode}`);
          };
          const { ready, connected } = prober.probe(added.hostAddress, added.hostPort, 10_000);
          await ready;
          const start = nowNs();
          await add();
          latency[variant].command.push(msSince(start));
          const at = await connected;
          if (at === undefined) throw new Error(`${variant}: the added forward ${added.hostAddress}:${added.hostPort} carried no connection within 10 s`);
          latency[variant].toConnection.push(Number(at - start) / 1e6);
          if (variant === 'gatehouse') {
            const start = nowNs();
            await dataplane.apply({ ...installedState, revision: 3 + 2 * t });
            latency.gatehouse.remove.push(msSince(start));
          } else {
            await target(IPTABLES, ['-t', 'nat', '-D', ...iptablesRule(added)]);
          }
        }
      } finally {
        if (variant === 'gatehouse') await dataplane.remove();
        else await uninstall(variant);
      }
    }
    // the whole path on a real controller and agent, in its own lab (bench/nat-scale/end-to-end.ts)
    const endToEnd = await measureEndToEnd({ forwards: LATENCY_SIZE, samples: Number(process.env.BENCH_E2E_SAMPLES ?? 5), log: (line) => console.log(line) });

    report({ runs, installMs, gatehouseInstall, renderMs, restoreInstall, perRule, latency, endToEnd, conntrackMax, netnsExecMs });
  } finally {
    prober?.close();
    if (host) {
      // the namespace's deletion removes these too; removing them first leaves nothing behind even if it fails
      await deleteTable(TABLE.family, TABLE.table, { netns: host.name }).catch(() => undefined);
      await host.exec(IPTABLES, ['-t', 'nat', '-F']).catch(() => undefined);
    }
    stopChildren();
    await lab.cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

type ExecTargetRun = LabNamespace['exec'];

/** One `iptables -t nat -A` per rule from an empty chain, until all are in or the time budget is spent. */
async function perRuleInstall(
  target: ExecTargetRun,
  forwards: readonly Forward[],
): Promise<{ callsMs: number[]; totalMs: number; measuredMs: number; netnsExecMs: number }> {
  console.error(`nat-scale: ${forwards.length} x \`${IPTABLES} -t nat -A\` (budget ${PER_RULE_BUDGET_MS / 1000} s)`);
  const callsMs: number[] = [];
  // what `ip netns exec` alone costs, sampled alongside (outside the timed total) under the same machine load
  const execMs: number[] = [];
  let sampledMs = 0;
  const start = nowNs();
  for (const f of forwards) {
    callsMs.push(await timedMs(() => target(IPTABLES, ['-t', 'nat', '-A', ...iptablesRule(f)])));
    if (callsMs.length % 50 === 0) {
      const ms = await timedMs(() => target('true', []));
      execMs.push(ms);
      sampledMs += ms;
    }
    if (msSince(start) - sampledMs > PER_RULE_BUDGET_MS) break;
  }
  const measuredMs = msSince(start) - sampledMs;
  const netnsExecMs = median(execMs.length > 0 ? execMs : [0]);
  if (callsMs.length === forwards.length) return { callsMs, totalMs: measuredMs, measuredMs, netnsExecMs };
  // per-call time grows with the chain (the whole table is rewritten each time): fit a + b·i, sum the rest
  const k = callsMs.length;
  const meanI = (k - 1) / 2;
  const meanT = callsMs.reduce((s, t) => s + t, 0) / k;
  let cov = 0;
  let varI = 0;
  callsMs.forEach((t, i) => {
    cov += (i - meanI) * (t - meanT);
    varI += (i - meanI) ** 2;
  });
  const b = varI > 0 ? cov / varI : 0;
  const a = meanT - b * meanI;
  let rest = 0;
  for (let i = k; i < forwards.length; i++) rest += a + b * i;
  return { callsMs, totalMs: measuredMs + rest, measuredMs, netnsExecMs };
}

function failureText(failures: Record<string, number>): string {
  const entries = Object.entries(failures);
  return entries.length === 0 ? '' : `  failures ${entries.map(([code, count]) => `${code}:${count}`).join(' ')}`;
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}x`;
}

/** Prints the connection rates of the load runs, their CPU and conntrack figures. */
function reportLoad(runs: LoadRun[], conntrackMax: number): void {
  const base = SIZES[0]!;
  const top = SIZES[SIZES.length - 1]!;
  const baselineName = `${IPTABLES} linear chain`;
  console.log(`\nNAT scale benchmark: new TCP connections/s through ONE forward (client ns → host DNAT → instance ns), ${CONCURRENCY} in flight,`);
  console.log(
    `${DURATION_MS / 1000} s counted after ${WARMUP_MS / 1000} s warm-up, median of ${ROUNDS} round(s) (order alternating); 2 cores shared by load generator, server and kernel.`,
  );
  console.log(
    `Gatehouse: renderRuleset as the driver base renders it + applyNft(replaceTable) (nft maps daddr . l4proto . dport). Baseline: ${baselineName} loaded with ${IPTABLES_RESTORE},`,
  );
  console.log(
    `one \`-A PREROUTING -d ADDR -p tcp --dport P -j DNAT --to-destination IP:PORT\` per forward, the measured forward being the LAST rule (worst case).`,
  );
  const metrics: { title: string; unit: string; value: (x: LoadRun) => number }[] = [
    { title: 'connections per second', unit: 'conn/s', value: (x) => x.perSecond },
    {
      title:
        "connections per CPU-second of the load generator (the NAT path runs in softirq in its context and is charged to it; other processes' load cancels out)",
      unit: 'conn/cpu-s',
      value: perCpuSecond,
    },
  ];
  for (const metric of metrics) {
    const values = (variant: LoadVariant, n: number) => runs.filter((x) => x.variant === variant && x.n === n).map(metric.value);
    const mid = (variant: LoadVariant, n: number) => median(values(variant, n));
    const cell = (variant: LoadVariant, n: number) =>
      `${mid(variant, n).toFixed(0).padStart(7)} (${Math.min(...values(variant, n)).toFixed(0)}-${Math.max(...values(variant, n)).toFixed(0)})`;
    console.log(`\n${metric.title}`);
    console.log(
      `forwards   gatehouse ${metric.unit} (range)`.padEnd(40) + `vs 1 fwd   baseline ${metric.unit} (range)`.padEnd(41) + 'vs 1 fwd   gatehouse/baseline',
    );
    for (const n of SIZES) {
      console.log(
        `${String(n).padStart(8)}   ${cell('gatehouse', n)}`.padEnd(40) +
          `${ratio(mid('gatehouse', n), mid('gatehouse', base)).padStart(8)}   ${cell('baseline', n).padEnd(30)}${ratio(mid('baseline', n), mid('baseline', base)).padStart(8)}   ${ratio(mid('gatehouse', n), mid('baseline', n)).padStart(8)}`,
      );
    }
    console.log(
      `${String(base).padStart(8)}   hand-written nft rule (one \`ip daddr A tcp dport P dnat to T\` in an ip nat chain): ${cell('nft-rule', base)}; gatehouse/nft rule ${ratio(mid('gatehouse', base), mid('nft-rule', base))}`,
    );
    const drop = 1 - mid('gatehouse', top) / mid('gatehouse', base);
    const single = Math.min(mid('gatehouse', base) / mid('baseline', base), mid('gatehouse', base) / mid('nft-rule', base));
    console.log(
      `target (issue 23): at ${base} forward Gatehouse at least 0.95x the iptables single rule and the nft rule: ${single >= 0.95 ? 'MET' : 'NOT MET'} (${single.toFixed(2)}x the better of the two); at ${top} at least 0.95x its own ${base}-forward figure: ${drop <= 0.05 ? 'MET' : 'NOT MET'}`,
    );
    // issue 20's row: the rate at the largest size against 1 forward, the iptables chain beside it in the same run
    const kept = mid('gatehouse', top) / mid('gatehouse', base);
    console.log(
      `row (issue 20) new-connection rate at ${top} forwards vs ${base}: ${mid('gatehouse', top).toFixed(0)} vs ${mid('gatehouse', base).toFixed(0)} ${metric.unit}, ratio ${kept.toFixed(2)}, target >= 0.95: ${kept >= 0.95 ? 'MET' : 'NOT MET'}; baseline ${baselineName} in the same run: ratio ${(mid('baseline', top) / mid('baseline', base)).toFixed(2)}; load averages ${runs.map((x) => x.load.split(' ')[0]).join(' ')}${runs.some((x) => Number(x.load.split(' ')[0]) > 2) ? ' (UNRELIABLE: load average above the 2 cores)' : ''}`,
    );
    console.log(
      `target (issue): at ${top} forwards Gatehouse within 10% of its ${base}-forward figure: ${drop <= 0.1 ? 'MET' : 'NOT MET'} (${Math.abs(drop * 100).toFixed(1)}% ${drop >= 0 ? 'lower' : 'higher'}); baseline at ${top}: ${((mid('baseline', top) / mid('baseline', base)) * 100).toFixed(0)}% of its ${base}-forward figure`,
    );
  }
  console.log(`machine load averages (1/5/15 min) after each run: ${runs.map((x) => x.load.split(' ')[0]).join(' ')}`);
  const busiest = runs.reduce((m, x) => Math.max(m, x.conntrackAfter), 0);
  console.log(
    `conntrack (host ns): at most ${busiest} entries at the end of a counted window (nf_conntrack_max ${conntrackMax}, global); reset connections stay in CLOSE state until the kernel collects them, so the table is emptied (conntrack -F) before each window`,
  );
  const cpu = (variant: Variant, n: number) => {
    const xs = runs.filter((x) => x.variant === variant && x.n === n);
    const m = (f: (x: LoadRun) => number) => median(xs.map(f)).toFixed(2);
    return `load ${m((x) => x.cpuShare)} server ${m((x) => x.cpu.server)} softirq ${m((x) => x.cpu.softirq)} others ${m((x) => x.cpu.others)}`;
  };
  console.log('CPU during the counted window, in cores of the 2 (median): load generator, server, softirq (the NAT path; overlaps both), other processes:');
  for (const n of SIZES) console.log(`  ${String(n).padStart(6)}  gatehouse: ${cpu('gatehouse', n)}   baseline: ${cpu('baseline', n)}`);
  const failures = runs.filter((x) => Object.keys(x.failures).length > 0);
  if (failures.length > 0) console.log(`failed connections: ${failures.map((x) => `${x.variant}@${x.n}${failureText(x.failures)}`).join('; ')}`);
}

function report(r: {
  runs: LoadRun[];
  installMs: Record<LoadVariant, Map<number, number[]>>;
  gatehouseInstall: number[];
  renderMs: number;
  restoreInstall: number[];
  perRule: { callsMs: number[]; totalMs: number; measuredMs: number; netnsExecMs: number };
  latency: Record<Variant, { toConnection: number[]; command: number[]; remove: number[] }>;
  endToEnd: EndToEndResult;
  conntrackMax: number;
  netnsExecMs: number;
}): void {
  reportLoad(r.runs, r.conntrackMax);

  console.log(
    `\ninstall time from empty (median of 3 unless stated; every command runs through \`ip netns exec\`, ${r.netnsExecMs.toFixed(1)} ms per call on its own):`,
  );
  const g = median(r.gatehouseInstall);
  const restore = median(r.restoreInstall);
  console.log(
    `  gatehouse, ${INSTALL_SIZE} forwards, one nft transaction (render + apply)     ${g.toFixed(0).padStart(8)} ms   (renderRuleset alone ${r.renderMs.toFixed(0)} ms)`,
  );
  console.log(`  baseline, ${INSTALL_SIZE} rules, one ${IPTABLES_RESTORE}             ${restore.toFixed(0).padStart(8)} ms   ${ratio(restore, g)} gatehouse`);
  const calls = r.perRule.callsMs;
  const measuredAll = calls.length === INSTALL_SIZE;
  const perRuleNet = r.perRule.totalMs - INSTALL_SIZE * r.perRule.netnsExecMs;
  console.log(
    `  baseline, ${INSTALL_SIZE} x \`${IPTABLES} -t nat -A\` (once)             ${r.perRule.totalMs.toFixed(0).padStart(8)} ms   ${ratio(r.perRule.totalMs, g)} gatehouse` +
      (measuredAll
        ? ` (all ${INSTALL_SIZE} invocations measured)`
        : ` (EXTRAPOLATED: ${calls.length} invocations measured in ${(r.perRule.measuredMs / 1000).toFixed(0)} s, the rest from a linear fit of per-call time against chain length)`),
  );
  console.log(
    `    per call: ${median(calls.slice(0, 100)).toFixed(1)} ms for the first 100, ${median(calls.slice(-100)).toFixed(1)} ms for the last 100 measured; without \`ip netns exec\` (${r.perRule.netnsExecMs.toFixed(1)} ms a call, sampled every 50th call) ≈ ${(perRuleNet / 1000).toFixed(0)} s in all`,
  );
  for (const n of SIZES) {
    console.log(
      `  during the load runs, ${String(n).padStart(6)} forwards: gatehouse ${median(r.installMs.gatehouse.get(n)!).toFixed(0).padStart(6)} ms, ${IPTABLES_RESTORE} ${median(r.installMs.baseline.get(n)!).toFixed(0).padStart(6)} ms`,
    );
  }

  console.log(
    `\none new forward with ${LATENCY_SIZE} installed: change issued → first successful connection through it (polled every ~1 ms), ${TRIALS} trials`,
  );
  console.log('variant                                             median ms    p90 ms    max ms   command alone (median ms)');
  const describe: Record<Variant, string> = {
    gatehouse: 'gatehouse: Dataplane.apply, 1 nft txn, 3 elements',
    baseline: `baseline: \`${IPTABLES} -t nat -A\` one rule`,
  };
  for (const variant of ['gatehouse', 'baseline'] as const) {
    const l = r.latency[variant];
    console.log(
      `${describe[variant].padEnd(50)} ${median(l.toConnection).toFixed(1).padStart(9)} ${percentile(l.toConnection, 90).toFixed(1).padStart(9)} ${Math.max(
        ...l.toConnection,
      )
        .toFixed(1)
        .padStart(9)}   ${median(l.command).toFixed(1).padStart(9)}`,
    );
  }
  console.log(
    `  baseline/gatehouse: ${ratio(median(r.latency.baseline.toConnection), median(r.latency.gatehouse.toConnection))}; both include one \`ip netns exec\` (${r.netnsExecMs.toFixed(1)} ms)`,
  );
  console.log(
    `  gatehouse removing the forward again (Dataplane.apply of the previous revision): median ${median(r.latency.gatehouse.remove).toFixed(1)} ms, max ${Math.max(...r.latency.gatehouse.remove).toFixed(1)} ms`,
  );
  const e = r.endToEnd;
  console.log(
    `createPortForward mutation → first connection with ${e.forwards} forwards (controller on ${e.store}, agent, Linux plugin): median ${median(e.latencyMs).toFixed(1)} ms, max ${Math.max(...e.latencyMs).toFixed(1)} ms`,
  );
  console.log(
    `  from the mutation sent (the controller and agent share this process, so the controller's reload of the host's state is counted here): median ${median(e.fromSentMs).toFixed(1)} ms, max ${Math.max(...e.fromSentMs).toFixed(1)} ms`,
  );
  console.log(
    `  of which: the agent had the new revision (a patch, checked and folded in) after median ${median(e.receivedMs).toFixed(1)} ms; its apply took median ${median(e.applyMs).toFixed(1)} ms`,
  );
}

await main();
