/**
 * One small nft transaction at N forwards (issue 20): the one-shot `nft -j -f FILE` of `applyNft`
 * (a process started per transaction, through `ip netns exec` and `env`) against the long-lived
 * `nft -j -i` of `NftSession`, in the same run, alternating. Each change is the bench's forward
 * add (an element in each of `fwd4_addr`, `fwd4_port`, `fwd4_ctr`) followed by its delete; the
 * table is the dataplane's, installed by `Dataplane.apply` with N forwards in a lab namespace.
 * Also: what the session's process holds (VmRSS, VmHWM from /proc) after it started, after its
 * first transaction and after all of them, to show whether nft's cache keeps the table's elements
 * between transactions; and the session's cost per byte of a transaction line (an add of K
 * elements, K = 1, 64, 256).
 *
 *   flock /tmp/bench.lock npx tsx bench/nft-session.ts    (as root)
 *     BENCH_NS_SIZES=1,60000,250000 BENCH_NS_CHANGES=100
 */
import { readFile } from 'node:fs/promises';
import type { DesiredPortForward, DesiredState } from '@gatehouse/sdk';
import { NetnsLab, labAvailable } from '@gatehouse/sdk/testkit';
import { Dataplane } from '../agents/dataplane/src/dataplane.js';
import { applyNft, type NftCommand } from '../agents/dataplane/src/nft.js';
import { NftSession } from '../agents/dataplane/src/nft-session.js';
import { TABLE } from '../agents/dataplane/src/render.js';
import { loadAverage, median, timeStats } from './nat-scale/harness.js';

const SIZES = (process.env.BENCH_NS_SIZES ?? '1,60000,250000').split(',').map(Number);
const CHANGES = Number(process.env.BENCH_NS_CHANGES ?? 100);
const SEED_ADDRESSES = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
const TRIAL_ADDRESS = '198.51.100.5';
const PORTS_PER_ADDRESS = 62_500;
const INSTANCE_ADDRESS = '10.77.0.2';

const nowNs = () => process.hrtime.bigint();
const msOf = (from: bigint) => Number(nowNs() - from) / 1e6;

function stateOf(n: number): DesiredState {
  const forwards: DesiredPortForward[] = Array.from({ length: n }, (_, i) => ({
    id: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
    protocol: 'tcp',
    hostAddress: SEED_ADDRESSES[Math.floor(i / PORTS_PER_ADDRESS)]!,
    hostPorts: { start: 1024 + (i % PORTS_PER_ADDRESS), end: 1024 + (i % PORTS_PER_ADDRESS) },
    targetAddress: INSTANCE_ADDRESS,
    targetPorts: { start: 8080, end: 8080 },
    sourceCidrs: [],
  }));
  return {
    apiVersion: 1,
    hostId: 'bench-host',
    hostName: 'bench',
    revision: 1,
    publicAddresses: [...SEED_ADDRESSES, TRIAL_ADDRESS],
    instances: [
      {
        id: '11111111-1111-4111-8111-111111111111',
        name: 'vm1',
        externalId: 'vm1',
        nics: [
          {
            id: '22222222-2222-4222-8222-222222222222',
            name: 'eth0',
            mac: '02:00:0a:4d:00:02',
            network: 'br0',
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

/** The add and the delete of one forward's elements (host port `port` on the trial address). */
function change(port: number): { add: NftCommand[]; del: NftCommand[] } {
  const key = { concat: [TRIAL_ADDRESS, 'tcp', port] };
  return {
    add: [
      { add: { element: { ...TABLE, name: 'fwd4_addr', elem: [[key, INSTANCE_ADDRESS]] } } },
      { add: { element: { ...TABLE, name: 'fwd4_port', elem: [[key, 8080]] } } },
      { add: { element: { ...TABLE, name: 'fwd4_ctr', elem: [{ elem: { val: key, comment: 'fwd_bench' } }] } } },
    ],
    del: ['fwd4_addr', 'fwd4_port', 'fwd4_ctr'].map((name) => ({ delete: { element: { ...TABLE, name, elem: [key] } } })),
  };
}

/** VmRSS and VmHWM of a process, in MiB. */
async function memoryOf(pid: number | undefined): Promise<string> {
  if (pid === undefined) return 'no process';
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return `RSS ${(kib('VmRSS') / 1024).toFixed(1)} MiB (peak ${(kib('VmHWM') / 1024).toFixed(1)})`;
}

const f1 = (x: number) => x.toFixed(1);

async function main(): Promise<void> {
  if (!(await labAvailable())) {
    console.error('nft-session: needs root and `ip netns`; nothing was measured');
    process.exitCode = 1;
    return;
  }
  const lab = new NetnsLab();
  const rows: string[] = [];
  try {
    const host = await lab.namespace('host');
    const target = { netns: host.name };
    for (const n of SIZES) {
      const dataplane = new Dataplane(target, { instanceCounters: false });
      const session = new NftSession(target, { recycleBytes: Number.MAX_SAFE_INTEGER });
      try {
        let t = nowNs();
        await dataplane.apply(stateOf(n), { force: true });
        console.error(`nft-session: N=${n} installed in ${msOf(t).toFixed(0)} ms (load ${await loadAverage()})`);
        // the process, started by a transaction that changes nothing (a table that is there)
        t = nowNs();
        await session.apply([{ add: { table: { family: TABLE.family, name: TABLE.table } } }]);
        const firstMs = msOf(t);
        const memory = [`after its first transaction ${await memoryOf(session.pid)}`];
        const oneShot: number[] = [];
        const viaSession: number[] = [];
        for (let c = 0; c < CHANGES; c++) {
          // each path its own forward (the other path's add and delete do not touch it)
          const shot = change(60_000 + (c % 2000));
          const viaLine = change(62_000 + (c % 2000));
          for (const step of ['add', 'del'] as const) {
            t = nowNs();
            await applyNft(shot[step], target);
            oneShot.push(msOf(t));
            t = nowNs();
            await session.apply(viaLine[step]);
            viaSession.push(msOf(t));
          }
          if (c === 9) memory.push(`after 20 ${await memoryOf(session.pid)}`);
        }
        memory.push(`after ${2 * CHANGES} ${await memoryOf(session.pid)}`);
        const load = await loadAverage();
        // the session's cost per byte: adds of K elements (and their deletes), one line each
        const perSize: string[] = [];
        for (const k of [1, 64, 256]) {
          const keys = Array.from({ length: k }, (_, i) => ({ concat: [TRIAL_ADDRESS, 'tcp', 50_000 + i] }));
          const add: NftCommand[] = [{ add: { element: { ...TABLE, name: 'fwd4_port', elem: keys.map((key) => [key, 8080]) } } }];
          const del: NftCommand[] = [{ delete: { element: { ...TABLE, name: 'fwd4_port', elem: keys } } }];
          const bytes = JSON.stringify({ nftables: add }).length;
          const times: number[] = [];
          const big = new NftSession(target, { maxLineBytes: Number.MAX_SAFE_INTEGER });
          try {
            await big.apply([{ add: { table: { family: TABLE.family, name: TABLE.table } } }]);
            for (let r = 0; r < 10; r++) {
              t = nowNs();
              await big.apply(add);
              times.push(msOf(t));
              await big.apply(del);
            }
          } finally {
            await big.close();
          }
          const shot: number[] = [];
          for (let r = 0; r < 10; r++) {
            t = nowNs();
            await applyNft(add, target);
            shot.push(msOf(t));
            await applyNft(del, target);
          }
          perSize.push(`${k} elements (${bytes} bytes): session ${f1(median(times))} ms, nft -j -f ${f1(median(shot))} ms`);
        }
        rows.push(
          `N=${n}: ${CHANGES} adds and ${CHANGES} deletes of 3 elements, alternating one-shot and session; load ${load}`,
          `  nft -j -f (ip netns exec env nft): ${timeStats(oneShot)}`,
          `  session (nft -j -i):               ${timeStats(viaSession)}; its first transaction (process start) ${f1(firstMs)} ms`,
          `  session process: ${memory.join('; ')}; ${JSON.stringify(session.stats)}`,
          `  line size (median of 10 adds): ${perSize.join('; ')}; load ${await loadAverage()}`,
        );
        console.error(rows.slice(-5).join('\n'));
      } finally {
        await session.close();
        await dataplane.remove();
        await dataplane.close();
      }
    }
  } finally {
    await lab.cleanup();
  }
  console.log(
    `\nnft-session: one small transaction, one-shot against the session (nft ${(await (await import('@gatehouse/sdk')).run('nft', ['--version'])).trim()})`,
  );
  for (const row of rows) console.log(row);
}

await main();
