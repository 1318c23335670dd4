/**
 * Dataplane scale benchmark (issue 20, host side): with N forwards in the table (default 250,000,
 * and 60,000 beside it), as the driver base keeps it (no per-instance counters):
 *
 * - counters of every forward: `Dataplane.counters()` (what the agent's stats loop reads every
 *   second) against the read before issue 20 in the same run (`list counters table`, both counter
 *   sets parsed whole and `list tables`), and the floor of any read through nft 1.0.6: one bare
 *   `nft -j list set` of the counter set. Target: < 250 ms at 250,000.
 * - full install: `Dataplane.apply` with `force` (the agent's repair) after `nft flush ruleset`,
 *   and a new Dataplane (an agent start) over the table already there. Target: < 3 s at 250,000.
 *   Memory: the peak RSS of nft applying the same transaction (`/usr/bin/time -f %M`), and of this
 *   process (the agent's part: the desired state, the Dataplane, the rendered transaction).
 *
 * Each row prints its figure, its target or baseline, the ratio and MET/NOT MET, with the machine's
 * load average (2 cores shared with other work: figures under a load average above 2 are slowed by
 * others and marked unreliable). The rate of new connections at 250,000 forwards is measured by
 * `BENCH_NAT_SIZES=1,250000 BENCH_NAT_LOAD_ONLY=1 npx tsx bench/nat-scale.ts`.
 *
 *   npx tsx bench/dataplane-scale.ts     (as root; BENCH_DP_SIZES=60000,250000 BENCH_DP_READS=5)
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable } from '@gatehouse/sdk/testkit';
import { loadAverage, median, sequential, timedMs } from './nat-scale/harness.js';
import { INSTANCES, instanceAddress, natDesiredState, type Forward } from './nat-scale/state.js';
import { Dataplane } from '../agents/dataplane/src/dataplane.js';
import { idFromName } from '../agents/dataplane/src/observe.js';
import { replaceTable } from '../agents/dataplane/src/nft.js';
import { TABLE, renderRuleset } from '../agents/dataplane/src/render.js';

const SIZES = (process.env.BENCH_DP_SIZES ?? '60000,250000').split(',').map(Number);
const READS = Number(process.env.BENCH_DP_READS ?? 5);
const PUBLIC_ADDRESSES = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
const COUNTERS_TARGET_MS = 250;
const INSTALL_TARGET_MS = 3000;
const DRIVER_RENDER = { instanceCounters: false } as const;

/** N forwards over the four addresses, ports from 1024 (at most 62,500 per address). */
function forwardsOf(n: number): Forward[] {
  const per = Math.ceil(n / PUBLIC_ADDRESSES.length);
  if (per > 64_000) throw new Error(`at most ${64_000 * PUBLIC_ADDRESSES.length} forwards fit four addresses`);
  return Array.from({ length: n }, (_, i) => ({
    hostAddress: PUBLIC_ADDRESSES[Math.floor(i / per)]!,
    hostPort: 1024 + (i % per),
    targetAddress: instanceAddress(i % INSTANCES),
    targetPort: 8080,
  }));
}

/** The counter read before issue 20, for the baseline: four listings parsed whole. */
async function previousRead(netns: string): Promise<number> {
  const list = async (...args: string[]) =>
    (JSON.parse(await run('nft', ['-j', 'list', ...args], { netns, timeoutMs: 120_000 })) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
  await list('counters', 'table', TABLE.family, TABLE.table);
  const sets = [...(await list('set', TABLE.family, TABLE.table, 'fwd4_ctr')), ...(await list('set', TABLE.family, TABLE.table, 'fwd6_ctr'))];
  await list('tables', TABLE.family);
  const forwards = new Map<string, { packets: number; bytes: number }>();
  for (const set of sets) {
    for (const e of (set.set?.elem as { elem?: { comment?: string; counter?: { packets: number; bytes: number } } }[] | undefined) ?? []) {
      const fwd = /^fwd_(.+)$/.exec(e.elem?.comment ?? '');
      if (!fwd || !e.elem?.counter) continue;
      const id = idFromName(fwd[1]!);
      const sum = forwards.get(id) ?? { packets: 0, bytes: 0 };
      forwards.set(id, { packets: sum.packets + e.elem.counter.packets, bytes: sum.bytes + e.elem.counter.bytes });
    }
  }
  return forwards.size;
}

/** Peak RSS (KiB) of `nft -j -f` applying `commands` in `netns`, as /usr/bin/time reports it. */
async function nftPeakKib(netns: string, commands: unknown[]): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-bench-'));
  try {
    const file = join(dir, 'ruleset.json');
    await writeFile(file, JSON.stringify({ nftables: commands }), { mode: 0o600 });
    const stderr = await new Promise<string>((resolve, reject) =>
      execFile(
        'ip',
        ['netns', 'exec', netns, '/usr/bin/time', '-f', 'peak %M', 'nft', '-j', '-f', file],
        { maxBuffer: 1 << 26, timeout: 300_000 },
        (err, _o, e) => (err ? reject(new Error(`${err.message} ${e}`)) : resolve(e)),
      ),
    );
    return Number(/peak (\d+)/.exec(stderr)?.[1] ?? NaN);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
const verdict = (met: boolean) => (met ? 'MET' : 'NOT MET');
const reliability = (load: string) => (Number(load.split(' ')[0]) > 2 ? ' (UNRELIABLE: load average above the 2 cores)' : '');

async function main(): Promise<void> {
  if (!(await labAvailable())) {
    console.error('dataplane-scale: needs root and `ip netns`; nothing was measured');
    process.exitCode = 1;
    return;
  }
  const lab = new NetnsLab();
  const rows: string[] = [];
  try {
    const ns = await lab.namespace('host');
    const target = { netns: ns.name };
    for (const n of SIZES) {
      const state = natDesiredState(forwardsOf(n), PUBLIC_ADDRESSES);
      console.error(`dataplane-scale: ${n} forwards (load ${await loadAverage()})`);
      // repair after a flush: the table is not there
      await run('nft', ['flush', 'ruleset'], target);
      const dataplane = new Dataplane(target, DRIVER_RENDER);
      const repairMs = await timedMs(() => dataplane.apply(state, { force: true }));
      const repairLoad = await loadAverage();
      const rss = process.memoryUsage();
      const peakRss = process.resourceUsage().maxRSS * 1024;
      // an agent start: a new Dataplane replaces the table already there
      let reader = dataplane;
      let startMs: number | undefined;
      try {
        const started = new Dataplane(target, DRIVER_RENDER);
        startMs = await timedMs(() => started.apply(state));
        reader = started;
      } catch (err) {
        console.error(`  agent start failed: ${(err as Error).message.slice(0, 200)}`);
      }
      const startLoad = await loadAverage();
      // counters, as the agent reads them every second
      let counted = 0;
      const readMs = [];
      for (let i = 0; i < READS; i++) readMs.push(await timedMs(async () => (counted = (await reader.counters()).forwards.size)));
      if (counted !== n) throw new Error(`counters() returned ${counted} forwards of ${n}`);
      const readLoad = await loadAverage();
      const floorMs = median(
        await sequential(3, () => timedMs(() => run('nft', ['-j', 'list', 'set', TABLE.family, TABLE.table, 'fwd4_ctr'], { ...target, timeoutMs: 120_000 }))),
      );
      let previousMs: number | undefined;
      try {
        previousMs = await timedMs(async () => {
          if ((await previousRead(ns.name)) !== n) throw new Error('the previous read missed forwards');
        });
      } catch (err) {
        console.error(`  previous read failed: ${(err as Error).message.slice(0, 200)}`);
      }
      const nftKib = await nftPeakKib(ns.name, replaceTable(TABLE.family, TABLE.table, renderRuleset(state, DRIVER_RENDER)));
      const read = median(readMs);
      rows.push(
        `counters of every forward, N=${n}: ${read.toFixed(0)} ms median of ${READS} (range ${Math.min(...readMs).toFixed(0)}-${Math.max(...readMs).toFixed(0)}); ` +
          `baseline (the read before issue 20, same run) ${previousMs === undefined ? 'failed' : `${previousMs.toFixed(0)} ms, ratio ${(read / previousMs).toFixed(2)}`}; ` +
          `nft's own listing of the counter set ${floorMs.toFixed(0)} ms; target < ${COUNTERS_TARGET_MS} ms at 250,000: ratio ${(read / COUNTERS_TARGET_MS).toFixed(2)} ${n >= 250_000 ? verdict(read < COUNTERS_TARGET_MS) : '(size below the target row)'}; load ${readLoad}${reliability(readLoad)}`,
        `full install, N=${n}: repair after flush ${repairMs.toFixed(0)} ms (load ${repairLoad}${reliability(repairLoad)}), agent start over the table ${startMs === undefined ? 'FAILED' : `${startMs.toFixed(0)} ms`} (load ${startLoad}${reliability(startLoad)}); ` +
          `target < ${INSTALL_TARGET_MS} ms: ratio ${(repairMs / INSTALL_TARGET_MS).toFixed(2)} / ${startMs === undefined ? '-' : (startMs / INSTALL_TARGET_MS).toFixed(2)} ${n >= 250_000 ? `${verdict(repairMs < INSTALL_TARGET_MS)} / ${verdict(startMs !== undefined && startMs < INSTALL_TARGET_MS)}` : '(size below the target row)'}`,
        `memory, N=${n}: nft applying the whole table peak RSS ${(nftKib / 1024).toFixed(0)} MiB; this process (the agent's part) after the repair RSS ${mb(rss.rss)}, heap ${mb(rss.heapUsed)}, peak RSS so far ${mb(peakRss)}`,
      );
      console.error(rows.slice(-3).join('\n'));
      await reader.remove();
    }
  } finally {
    await lab.cleanup();
  }
  console.log('\nDataplane scale benchmark (issue 20, host side), nft ' + (await run('nft', ['--version'])).trim());
  for (const row of rows) console.log(row);
}

await main();
