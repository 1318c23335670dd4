/**
 * Recovery times through control-plane outages (issue 22), each over BENCH_RUNS runs (default 5),
 * median and max, with real processes in namespaces of its own (run as root):
 *
 * 1. cache: the controller down, the agent restarted onto a flushed ruleset (a reboot): from the
 *    process start, and from when it begins applying its cache, until traffic passes the forward
 *    again; the built command (as installed) and the sources through tsx (as the tests run it).
 *    Baseline of the same run: a bare `node -e 0` (with `--import tsx` for the sources), what no
 *    agent can go below.
 * 2. PostgreSQL restart: a controller on a private server (initdb/pg_ctl) that is stopped and
 *    started: from the server being up until the controller LISTENs again, and until its first
 *    mutation succeeds.
 * 3. replica failover: two replicas on PostgreSQL, the one the agent is on SIGKILLed: until the
 *    agent is connected to the other, and until the other sees it online with the newest revision.
 * 4. partition heal: the agent cut off from the controller by nftables in its namespace for
 *    BENCH_PARTITION_MS (default 20,000: past the keep-alive; 300000 for the five minutes),
 *    one change made meanwhile: from the heal until it is connected, and until it has applied it.
 *
 *   flock /tmp/gatehouse-system.lock npx tsx bench/outage.ts     (BENCH_ONLY=cache,pg,failover,partition)
 */
import 'reflect-metadata';
import { execFile } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startController } from '@gatehouse/server';
import { createHost, createPool, createTestApi, postgresReachable, privatePostgresAvailable, startPostgresServer } from '@gatehouse/server/testing';
import { killController } from '../core/cli/test/support/processes.js';
import { PartitionLab } from '../core/cli/test/support/partition-lab.js';
import { ReplicaLab } from '../core/cli/test/support/replica-lab.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CUT_MS = Number(process.env.BENCH_PARTITION_MS ?? 20_000);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'cache,pg,failover,partition').split(','));
const REPO = fileURLToPath(new URL('..', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** "median M ms, max X ms (a, b, c ms)". */
function summary(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return `median ${Math.round(median)} ms, max ${Math.round(sorted.at(-1)!)} ms (${ms.map(Math.round).join(', ')} ms)`;
}

function median(ms: number[]): number {
  const sorted = [...ms].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function print(line: string): void {
  console.log(`${line}  [load ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores]`);
}

/** Milliseconds a bare `node [flags] -e 0` takes from spawn to exit. */
function bareNode(flags: string[]): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [...flags, '-e', '0'], { cwd: REPO }, (err) => (err ? reject(err) : resolve(performance.now() - start))),
  );
}

/** Polls `probe` every few ms until it is true; returns when (performance.now()), or throws after `ms`. */
async function when(what: string, probe: () => Promise<boolean>, ms = 60_000): Promise<number> {
  for (const end = performance.now() + ms; performance.now() < end;) {
    if (await probe()) return performance.now();
    await sleep(20);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

async function partitionAndCache(): Promise<void> {
  const lab = new PartitionLab();
  try {
    await lab.open();
    if (ONLY.has('partition')) {
      const connected: number[] = [];
      const applied: number[] = [];
      for (let run = 1; run <= RUNS; run++) {
        await lab.cut();
        const cutAt = performance.now();
        await lab.forward(18100 + run);
        const { desiredRevision } = await lab.hostAgent();
        const from = lab.agent.output().length;
        await lab.agent.waitFor(/no answer from the controller/, 60_000, from);
        await sleep(Math.max(0, CUT_MS - (performance.now() - cutAt)));
        const beforeHeal = lab.agent.output().length;
        await lab.heal();
        const healed = performance.now();
        const { at } = await lab.agent.waitFor(/connected to the controller/, 120_000, beforeHeal);
        const done = await when(
          'applied after the heal',
          async () => new RegExp(`"revision":${desiredRevision},"changed":true`).test(lab.agent.output().slice(beforeHeal)),
          120_000,
        );
        connected.push(at - healed);
        applied.push(done - healed);
      }
      print(
        `[outage] partition healed (cut ${CUT_MS} ms each): agent connected again ${summary(connected)}; the change of the cut applied ${summary(applied)}`,
      );
    }
    if (ONLY.has('cache')) {
      await killController(lab.controller);
      // as installed (the built command) and as the tests run it (the sources through tsx)
      for (const dist of [true, false]) {
        const fromStart: number[] = [];
        const toApply: number[] = [];
        const fromApply: number[] = [];
        const bare: number[] = [];
        for (let run = 1; run <= RUNS; run++) {
          await lab.agent.stop();
          await lab.flushHost();
          if ((await lab.through(18080, 300)).startsWith('got:')) throw new Error('the forward still passes after the flush');
          bare.push(await bareNode(dist ? [] : ['--import', 'tsx']));
          const started = performance.now();
          const agent = lab.startAgent({ dist });
          const applying = agent.waitFor(/applying the cached desired state revision/, 30_000);
          const back = await when('traffic from the cache', async () => (await lab.through(18080, 300)) === 'got:hello from vm1', 30_000);
          const { at } = await applying;
          fromStart.push(back - started);
          toApply.push(at - started);
          fromApply.push(back - at);
        }
        print(
          `[outage] cache (${dist ? 'built command, node dist/cli.js' : 'sources through tsx'}), controller down, agent restarted onto a flushed ruleset: traffic again ${summary(fromStart)} from process start; of which start until the cached apply begins ${summary(toApply)}, the apply until traffic passes ${summary(fromApply)}; a bare node${dist ? '' : ' --import tsx'} -e 0 takes ${summary(bare)} (ratio of medians ${(median(fromStart) / median(bare)).toFixed(2)})`,
        );
      }
    }
  } finally {
    await lab.close();
  }
}

async function failover(): Promise<void> {
  const lab = new ReplicaLab();
  try {
    await lab.open();
    const connected: number[] = [];
    const online: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const move = await lab.failover();
      if (new URL(move.to.replace('ws', 'http')).port !== new URL(lab.replicas[0]!.url).port) throw new Error(`the agent went to ${move.to}`);
      connected.push(move.connectedMs);
      online.push(move.onlineMs);
      // the next run kills the replica it is on now; the fresh one is second in its list only after a restart of the agent
      await lab.startAgent();
    }
    print(`[outage] replica SIGKILLed: agent connected to the other ${summary(connected)}; seen online there with the newest revision ${summary(online)}`);
  } finally {
    await lab.close();
  }
}

async function postgresRestart(): Promise<void> {
  const pg = await startPostgresServer();
  const logger = { info: () => {}, warn: () => {}, error: () => {} };
  const controller = await startController({ store: { kind: 'postgres', url: pg.url, connectTimeoutS: 2 }, port: 0, bootstrap: false, logger });
  try {
    const api = await createTestApi(controller.store, controller.container);
    await createPool(api.admin, { name: 'bench', kind: 'PRIVATE', network: 'br-bench', cidr: '10.62.0.0/24' });
    const hostId = await createHost(api.admin, 'bench-host');
    const events = (controller.store as unknown as { eventTarget: { relistens: number; relistenedAt?: number } }).eventTarget;
    const relisten: number[] = [];
    const mutation: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const relistens = events.relistens;
      await pg.stop();
      await sleep(1000);
      await pg.start();
      const up = performance.now();
      const ok = await when(
        'a mutation after the restart',
        async () => {
          const r = await api.admin(`mutation($h: ID!, $n: String!) { createInstance(input: { hostId: $h, name: $n }) { __typename } }`, {
            h: hostId,
            n: `vm-${run}`,
          });
          return r.data?.createInstance?.__typename === 'CreateInstancePayload';
        },
        30_000,
      );
      await when('LISTEN again', async () => events.relistens > relistens, 30_000);
      mutation.push(ok - up);
      relisten.push(events.relistenedAt! - up);
    }
    print(
      `[outage] PostgreSQL restarted (down 1 s): controller LISTENs again ${summary(relisten)} after the server is up; first mutation succeeds ${summary(mutation)}`,
    );
  } finally {
    await controller.close();
    await pg.destroy();
  }
}

if (process.getuid?.() !== 0) throw new Error('bench/outage.ts needs root (namespaces, nftables, a private PostgreSQL)');
if (ONLY.has('pg')) {
  if (!privatePostgresAvailable()) console.log('[outage] no private PostgreSQL here (initdb, pg_ctl): skipped');
  else await postgresRestart();
}
if (ONLY.has('failover')) {
  if (!(await postgresReachable())) console.log('[outage] no PostgreSQL at DATABASE_URL: replica failover skipped');
  else await failover();
}
if (ONLY.has('partition') || ONLY.has('cache')) await partitionAndCache();
process.exit(0);
