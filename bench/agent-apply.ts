/**
 * One forward change through the host agent at N forwards (issue 20, "one change to a forward live
 * p99 < 50 ms"): the agent's own part of bench/forward-live.ts's path without the controller.
 *
 * A real HostAgent with the Linux plugin on a lab host namespace (one instance namespace, its NIC
 * made by the plugin, all N forwards on it, as in forward-live), fed as the controller feeds it:
 * the full document first (the table installed), then one patch per change — add a forward on a
 * new host port, edit its target port, delete it — as they arrive over the wire (JSON). Each change
 * is timed from the message's arrival to the end of the agent's work on it (patch applied, driver's
 * apply with its nft transaction, status reports built and serialised), with the agent's own
 * "applied … ms". Beside it, at the same N: the nft transaction of the same change alone (`nft -j -f`
 * of an element add/delete through the dataplane's own `applyNft`), and a bare `nft list tables`
 * (what any process spawn costs here).
 *
 * Changes are spaced by BENCH_AA_GAP_MS (default 300 ms), so the agent's delayed state-cache write
 * (1 s after an apply) lands among them, as in forward-live; the agent's drift poll runs every
 * BENCH_AA_DRIFT_MS (default 2,000 ms, the agent's default; 0: none) as it would.
 *
 *   flock /tmp/bench.lock npx tsx bench/agent-apply.ts    (as root)
 *     BENCH_AA_SIZES=1,60000,250000 BENCH_AA_CHANGES=20 BENCH_AA_GAP_MS=300 BENCH_AA_DRIFT_MS=2000
 *   profile: BENCH_AA_WINDOWS=/tmp/aa-windows.json node --import tsx --cpu-prof --cpu-prof-dir /tmp/aa-prof bench/agent-apply.ts
 *     then npx tsx bench/cpuprofile-top.ts /tmp/aa-prof/<file> --windows /tmp/aa-windows.json
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type DesiredPortForward, type DesiredState } from '@gatehouse/sdk';
import { NetnsLab, labAvailable } from '@gatehouse/sdk/testkit';
import { compareForwards, type DesiredStatePatch } from '@gatehouse/agent-protocol';
import { HostAgent } from '../agents/host-agent/src/index.js';
import { LinuxDriver } from '../plugins/linux/src/index.js';
import { applyNft } from '../agents/dataplane/src/nft.js';
import { TABLE } from '../agents/dataplane/src/render.js';
import { loadAverage, median, timeStats } from './nat-scale/harness.js';

const SIZES = (process.env.BENCH_AA_SIZES ?? '1,60000,250000').split(',').map(Number);
const CHANGES = Number(process.env.BENCH_AA_CHANGES ?? 20);
const GAP_MS = Number(process.env.BENCH_AA_GAP_MS ?? 300);
const WINDOWS = process.env.BENCH_AA_WINDOWS;
const DRIFT_MS = Number(process.env.BENCH_AA_DRIFT_MS ?? 2000);
const SEED_ADDRESSES = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
const TRIAL_ADDRESS = '198.51.100.5';
const PORTS_PER_ADDRESS = 62_500;
const TRIAL_FIRST_PORT = 62_000;
const INSTANCE_ID = '11111111-1111-4111-8111-111111111111';
const INSTANCE_ADDRESS = '10.77.0.2';

const nowNs = () => process.hrtime.bigint();
const msOf = (from: bigint, to: bigint = nowNs()) => Number(to - from) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The monotonic clock in µs, the one CPU profiles' timestamps use. */
const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n);

const forwardId = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

function forward(n: number, hostAddress: string, hostPort: number, targetPort: number): DesiredPortForward {
  return {
    id: forwardId(n),
    protocol: 'tcp',
    hostAddress,
    hostPorts: { start: hostPort, end: hostPort },
    targetAddress: INSTANCE_ADDRESS,
    targetPorts: { start: targetPort, end: targetPort },
    sourceCidrs: [],
  };
}

/** The document of forward-live's host: one instance (a lab namespace) holding `n` forwards on .1-.4, in the controller's order. */
function documentOf(n: number, netns: string, network: string): DesiredState {
  const forwards = Array.from({ length: n }, (_, i) =>
    forward(i, SEED_ADDRESSES[Math.floor(i / PORTS_PER_ADDRESS)]!, 1024 + (i % PORTS_PER_ADDRESS), 8080),
  ).sort(compareForwards);
  return {
    apiVersion: 1,
    hostId: 'bench-host',
    hostName: 'bench',
    revision: 1,
    publicAddresses: [...SEED_ADDRESSES, TRIAL_ADDRESS],
    instances: [
      {
        id: INSTANCE_ID,
        name: 'vm1',
        externalId: netns,
        nics: [
          {
            id: '22222222-2222-4222-8222-222222222222',
            name: 'eth0',
            mac: '02:00:0a:4d:00:02',
            network,
            addresses: [{ address: INSTANCE_ADDRESS, prefixLength: 24, delegated: false, gateway: '10.77.0.1', dns: [] }],
          },
        ],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
        bandwidth: [],
        portForwards: forwards,
      },
    ],
  };
}

interface Trial {
  kind: 'add' | 'edit' | 'delete';
  /** message arrived → patch folded in (receive returned) */
  patchMs: number;
  /** message arrived → the agent's 'applied' event */
  appliedMs: number;
  /** the agent's own "applied … ms" (its converge) */
  convergeMs: number;
  /** message arrived → the agent's work on it done (status reports sent) */
  doneMs: number;
  /** bytes of the status reports the change sent */
  reportBytes: number;
}

/** What the harness reaches inside the agent (private members, the harness standing in for the controller connection). */
interface AgentInside {
  state: { hostId: string | null };
  connection: unknown;
  receive(event: { revision: number; full?: DesiredState; patch?: DesiredStatePatch }): void;
  work(): Promise<void>;
  pollDrift(): Promise<void>;
}

async function measure(n: number, lab: NetnsLab, hostNs: string, instanceNs: string, network: string) {
  const stateDir = await mkdtemp(join(tmpdir(), 'gatehouse-bench-aa-'));
  const driver = new LinuxDriver({ hostNetns: hostNs, namespacePrefix: `${lab.prefix}-i` });
  const logs: { message: string; fields?: Record<string, unknown> }[] = [];
  const logger = {
    info: (message: string, fields?: Record<string, unknown>) => void logs.push({ message, fields }),
    warn: (message: string, fields?: Record<string, unknown>) => void logs.push({ message, fields }),
    error: (message: string, fields?: Record<string, unknown>) => {
      logs.push({ message, fields });
      console.error(`  agent error: ${message} ${JSON.stringify(fields ?? {})}`);
    },
  };
  const agent = new HostAgent({
    controllerUrl: 'ws://127.0.0.1:9/unused',
    token: 'unused',
    hostId: 'bench-host',
    driver,
    logger,
    stateDir,
    statsIntervalMs: 0,
    portAudit: false,
  });
  const inside = agent as unknown as AgentInside;
  inside.state.hostId = 'bench-host';
  let reportBytes = 0;
  // the controller connection: what the agent reports is serialised as graphql-ws would
  inside.connection = {
    request: async (_query: string, variables: unknown) => ((reportBytes += JSON.stringify(variables).length), {}),
    close: async () => undefined,
  };
  // the drift poll, as the agent's start() sets it (the harness does not start the agent: no controller)
  const drift = DRIFT_MS > 0 ? setInterval(() => void inside.pollDrift(), DRIFT_MS) : undefined;
  let applied = 0n;
  let convergeMs = NaN;
  agent.on('applied', () => {
    applied = nowNs();
  });
  const windows: [number, number][] = [];
  try {
    const doc = documentOf(n, instanceNs, network);
    let revision = 1;
    const started = nowNs();
    inside.receive({ revision, full: JSON.parse(JSON.stringify(doc)) as DesiredState });
    await inside.work();
    const installMs = msOf(started);
    console.error(`  N=${n}: full document applied in ${installMs.toFixed(0)} ms (load ${await loadAverage()})`);
    const trials: Trial[] = [];
    const patchOf = (p: Partial<DesiredStatePatch>): DesiredStatePatch => ({
      baseRevision: revision,
      revision: revision + 1,
      instances: [],
      removedInstances: [],
      portForwards: [],
      removedPortForwards: [],
      ...p,
    });
    for (let c = 0; c < CHANGES; c++) {
      const f = forward(1_000_000 + c, TRIAL_ADDRESS, TRIAL_FIRST_PORT + c, 8080);
      const changes: [Trial['kind'], DesiredStatePatch][] = [
        ['add', patchOf({ portForwards: [{ instanceId: INSTANCE_ID, forward: f }] })],
        ['edit', patchOf({ portForwards: [{ instanceId: INSTANCE_ID, forward: { ...f, targetPorts: { start: 8081, end: 8081 } } }] })],
        ['delete', patchOf({ removedPortForwards: [f.id] })],
      ];
      for (const [kind, patch] of changes) {
        patch.baseRevision = revision;
        patch.revision = ++revision;
        const wire = JSON.stringify({ revision, patch });
        await sleep(GAP_MS);
        reportBytes = 0;
        logs.length = 0;
        const windowStart = monotonicMicros();
        const t0 = nowNs();
        inside.receive(JSON.parse(wire) as { revision: number; patch: DesiredStatePatch });
        const patched = nowNs();
        await inside.work();
        const done = nowNs();
        windows.push([windowStart, monotonicMicros()]);
        convergeMs = Number(logs.find((l) => l.message === 'applied')?.fields?.ms ?? NaN);
        if (logs.some((l) => l.message === 'applied' && l.fields?.failed !== 0)) console.error(`  ${kind}: ${JSON.stringify(logs)}`);
        trials.push({ kind, patchMs: msOf(t0, patched), appliedMs: msOf(t0, applied), convergeMs, doneMs: msOf(t0, done), reportBytes });
      }
    }
    const load = await loadAverage();
    // the nft transaction of the same change alone, through the dataplane's applyNft (ip netns exec nft -j -f FILE)
    const key = { concat: [TRIAL_ADDRESS, 'tcp', 63_999] };
    const nftAdd: number[] = [];
    const nftDelete: number[] = [];
    const spawnMs: number[] = [];
    for (let c = 0; c < CHANGES; c++) {
      const add = [
        { add: { element: { ...TABLE, name: 'fwd4_addr', elem: [[key, INSTANCE_ADDRESS]] } } },
        { add: { element: { ...TABLE, name: 'fwd4_port', elem: [[key, 8080]] } } },
        { add: { element: { ...TABLE, name: 'fwd4_ctr', elem: [{ elem: { val: key, comment: 'fwd_bench' } }] } } },
      ];
      const del = ['fwd4_addr', 'fwd4_port', 'fwd4_ctr'].map((name) => ({ delete: { element: { ...TABLE, name, elem: [key] } } }));
      let t = nowNs();
      await applyNft(add, { netns: hostNs });
      nftAdd.push(msOf(t));
      t = nowNs();
      await applyNft(del, { netns: hostNs });
      nftDelete.push(msOf(t));
      t = nowNs();
      await run('nft', ['--version'], { netns: hostNs }); // a process started in the namespace (any listing fetches every element)
      spawnMs.push(msOf(t));
    }
    const nftLoad = await loadAverage();
    // what the drift poll lists: terse every poll, with every element every 15th
    let t = nowNs();
    await run('nft', ['-j', '-t', 'list', 'table', TABLE.family, TABLE.table], { netns: hostNs, timeoutMs: 600_000 });
    const terseMs = msOf(t);
    // (at 250,000 forwards about half a minute of the kernel's time: measured up to 60,000)
    let fullMs = NaN;
    if (n <= 60_000) {
      t = nowNs();
      await run('nft', ['-j', 'list', 'table', TABLE.family, TABLE.table], { netns: hostNs, timeoutMs: 600_000 });
      fullMs = msOf(t);
    }
    return { installMs, trials, load, nftAdd, nftDelete, spawnMs, nftLoad, terseMs, fullMs, windows, rss: process.memoryUsage().rss };
  } finally {
    if (drift) clearInterval(drift);
    await agent.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (!(await labAvailable())) {
    console.error('agent-apply: needs root and `ip netns`; nothing was measured');
    process.exitCode = 1;
    return;
  }
  const lab = new NetnsLab();
  const rows: string[] = [];
  const allWindows: [number, number][] = [];
  try {
    const host = await lab.namespace('host');
    const instance = await lab.namespace('i1');
    const network = `${lab.prefix}br`;
    for (const n of SIZES) {
      console.error(`agent-apply: ${n} forwards (load ${await loadAverage()})`);
      const r = await measure(n, lab, host.name, instance.name, network);
      allWindows.push(...r.windows);
      const all = r.trials;
      const of = (kind: Trial['kind']) => all.filter((t) => t.kind === kind);
      rows.push(
        `N=${n}: ${all.length} changes (${CHANGES} each of add, edit, delete), ${GAP_MS} ms apart; full install ${r.installMs.toFixed(0)} ms; RSS ${(r.rss / 2 ** 20).toFixed(0)} MiB; load ${r.load}`,
        `  arrival → work done (reports sent): all ${timeStats(all.map((t) => t.doneMs))}`,
        ...(['add', 'edit', 'delete'] as const).map((k) => `    ${k.padEnd(6)} ${timeStats(of(k).map((t) => t.doneMs))}`),
        `  arrival → patch folded in ${timeStats(all.map((t) => t.patchMs))}; → applied event ${timeStats(all.map((t) => t.appliedMs))}; agent's "applied ms" ${timeStats(all.map((t) => t.convergeMs))}`,
        `  report bytes per change: median ${median(all.map((t) => t.reportBytes))}, max ${Math.max(...all.map((t) => t.reportBytes))}`,
        `  nft alone (ip netns exec nft -j -f, 3 elements): add ${timeStats(r.nftAdd)}, delete ${timeStats(r.nftDelete)}; ip netns exec nft --version ${timeStats(r.spawnMs)}; load ${r.nftLoad}`,
        `  the drift poll's listings: terse ${r.terseMs.toFixed(0)} ms, with elements ${r.fullMs.toFixed(0)} ms`,
      );
      console.error(rows.slice(-8).join('\n'));
    }
  } finally {
    await lab.cleanup();
  }
  if (WINDOWS) await writeFile(WINDOWS, JSON.stringify(allWindows));
  console.log(`\nagent-apply: one forward change through the host agent (nft ${(await run('nft', ['--version'])).trim()})`);
  for (const row of rows) console.log(row);
}

await main();
