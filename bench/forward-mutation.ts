/**
 * The controller's part of issue 20's rows "one new forward" and "deleting or editing a forward":
 * the answer time of single createPortForward / updatePortForward / deletePortForward requests
 * (GraphQL over HTTP on loopback, no namespaces), with BENCH_MUTATION_FORWARDS forwards
 * on the same host, seeded through importPortForwards as bench/forward-live.ts seeds them. A
 * mutation's cost should not grow with the forwards already on the host; the baseline trials run
 * before the seed, on the empty host.
 *
 *   npx tsx bench/forward-mutation.ts   (under flock /tmp/bench.lock)
 *     BENCH_MUTATION_FORWARDS=60000 BENCH_MUTATION_TRIALS=30 BENCH_MUTATION_STORES=postgres,pglite
 *     BENCH_MUTATION_AGENT=1: a host agent (bench/forward-mutation/agent.ts, a driver that applies
 *     nothing) takes every revision and reports its statuses, as a live host's does; each trial
 *     then waits for the agent to apply the change before the next mutation (as forward-live does)
 *     BENCH_MUTATION_EXPLAIN=1: on PostgreSQL, auto_explain logs (to the server's log) the plan of
 *     every statement of the trials that takes 5 ms or more, nested ones (triggers) included
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { startController, type Controller } from '../core/server/src/server.js';
import { BENCH_ERR, benchGql, createBenchAgentToken, createBenchStore, dropBenchDatabase, seedBenchHost } from './bench-store.js';
import { loadAverage, median, percentile } from './nat-scale/harness.js';

const FORWARDS = Number(process.env.BENCH_MUTATION_FORWARDS ?? 60_000);
const TRIALS = Number(process.env.BENCH_MUTATION_TRIALS ?? 30);
const BASELINE_TRIALS = Number(process.env.BENCH_MUTATION_BASELINE_TRIALS ?? 10);
const STORES = (process.env.BENCH_MUTATION_STORES ?? 'postgres').split(',') as ('postgres' | 'pglite')[];
const EXPLAIN = process.env.BENCH_MUTATION_EXPLAIN === '1';
const AGENT = process.env.BENCH_MUTATION_AGENT === '1';
const HERE = dirname(fileURLToPath(import.meta.url));
const CHUNK = 25_000;
const TARGET_P99_MS = 50;

const ADDRESSES = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
const TRIAL_ADDRESS = '198.51.100.5';
const PORTS_PER_ADDRESS = 62_500;
const SEED_FIRST_PORT = 1024;
const BASELINE_FIRST_PORT = 61_000;
const TRIAL_FIRST_PORT = 62_000;
const ERR = BENCH_ERR;
const quiet = { info() {}, warn() {}, error: (...a: unknown[]) => console.error(...a), debug() {} };

type Kind = 'create' | 'edit' | 'delete';
const nowNs = () => process.hrtime.bigint();
const ms = (from: bigint) => Number(nowNs() - from) / 1e6;

async function runStore(kind: 'postgres' | 'pglite'): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-mutation-'));
  const created = await createBenchStore(kind, 'gatehouse_bench_mutation', dataDir);
  let controller: Controller | undefined;
  let agent: ChildProcess | undefined;
  try {
    controller = await startController({ store: created.store, port: 0, host: '127.0.0.1', logger: quiet as never });
    const url = controller.url;
    const secret = controller.bootstrapSecret!;
    const api = <T = any>(q: string, v?: Record<string, unknown>) => benchGql<T>(url, secret, q, v);
    const { hostId, instanceId, instanceAddress } = await seedBenchHost(api, {
      network: 'benchbr',
      subnet: '10.77.0',
      addresses: [...ADDRESSES, TRIAL_ADDRESS],
      externalId: 'vm1',
    });

    // with an agent: the revision it applied last, and a wait for a newer one
    let applied = 0;
    const appliedWaiters = new Set<() => void>();
    const desiredRevision = async () => (await api(`query ($id: ID!) { host(id: $id) { desiredRevision } }`, { id: hostId })).host.desiredRevision as number;
    const agentApplied = async (timeoutMs = 20_000) => {
      if (!agent) return;
      const want = await desiredRevision();
      const end = Date.now() + timeoutMs;
      while (applied < want) {
        if (Date.now() > end) throw new Error(`the agent did not apply revision ${want} within ${timeoutMs} ms (applied ${applied})`);
        await new Promise<void>((r) => {
          appliedWaiters.add(r);
          setTimeout(r, 100);
        });
      }
    };
    if (AGENT) {
      const token = await createBenchAgentToken(api, hostId);
      agent = spawn(process.execPath, [...process.execArgv.filter((a) => !a.startsWith('--cpu-prof')), join(HERE, 'forward-mutation/agent.ts')], {
        env: { ...process.env, GATEHOUSE_BENCH_AGENT: JSON.stringify({ controllerUrl: url, token, hostId }) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      createInterface({ input: agent.stdout! }).on('line', (line) => {
        const m = /^applied (\d+)$/.exec(line);
        if (m) applied = Math.max(applied, Number(m[1]));
        for (const w of appliedWaiters) w();
        appliedWaiters.clear();
      });
      await agentApplied(60_000);
    }

    const cycle = async (port: number, into: Record<Kind, number[]>) => {
      await agentApplied();
      let started = nowNs();
      const r = await api(
        `mutation ($id: ID!, $port: String!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostAddress: "${TRIAL_ADDRESS}", hostPort: $port, targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id: instanceId, port: String(port) },
      );
      into.create.push(ms(started));
      await agentApplied();
      const id = r.createPortForward.portForward.id as string;
      started = nowNs();
      await api(
        `mutation ($id: ID!) { updatePortForward(input: { portForwardId: $id, targetPort: "8081" }) { ... on UpdatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id },
      );
      into.edit.push(ms(started));
      await agentApplied();
      started = nowNs();
      await api(`mutation ($id: ID!) { deletePortForward(input: { portForwardId: $id }) { ... on DeletePortForwardPayload { portForward { id } } ${ERR} } }`, {
        id,
      });
      into.delete.push(ms(started));
    };
    const summary = (label: string, times: Record<Kind, number[]>) => {
      for (const k of ['create', 'edit', 'delete'] as Kind[]) {
        const t = times[k];
        const p99 = percentile(t, 99);
        console.log(
          `  ${label} ${k.padEnd(6)} answer ms: median ${median(t).toFixed(1)}, p99 ${p99.toFixed(1)}, max ${Math.max(...t).toFixed(1)} (${t.length} trials)${label === 'seeded  ' ? (p99 < TARGET_P99_MS ? '  ok' : `  over ${TARGET_P99_MS} ms`) : ''}`,
        );
      }
    };

    const baseline: Record<Kind, number[]> = { create: [], edit: [], delete: [] };
    for (let t = 0; t < BASELINE_TRIALS; t++) await cycle(BASELINE_FIRST_PORT + t, baseline);

    const seedStarted = nowNs();
    const rows: string[] = [];
    for (let i = 0; i < FORWARDS; i++)
      rows.push(`tcp,${SEED_FIRST_PORT + (i % PORTS_PER_ADDRESS)},${instanceAddress},8080,,${ADDRESSES[Math.floor(i / PORTS_PER_ADDRESS)]}`);
    for (let first = 0; first < rows.length; first += CHUNK) {
      await api(`mutation ($hostId: ID!, $csv: String!) { importPortForwards(input: { hostId: $hostId, csv: $csv }) { __typename ${ERR} } }`, {
        hostId,
        csv: `protocol,host_port,vm_ip,vm_port,note,host_address\n${rows.slice(first, first + CHUNK).join('\n')}\n`,
      });
    }
    await agentApplied(600_000);
    const seedSeconds = ms(seedStarted) / 1000;
    // the seed's events (on PostgreSQL its audit entries come back as NOTIFYs) are done with
    await atRest();
    if (EXPLAIN && created.store.kind === 'postgres') {
      const admin = postgres(created.store.url, { max: 1, onnotice: () => {} });
      for (const setting of [
        `session_preload_libraries = 'auto_explain'`,
        `auto_explain.log_min_duration = 5`,
        `auto_explain.log_analyze = on`,
        `auto_explain.log_buffers = on`,
        `auto_explain.log_nested_statements = on`,
      ])
        await admin.unsafe(`alter database ${created.database} set ${setting}`);
      await admin.end();
      // the settings reach new sessions only: a new controller on the same database
      await controller.close();
      // on the same port: an agent connects again by itself
      controller = await startController({ store: created.store, port: Number(new URL(url).port), host: '127.0.0.1', logger: quiet as never });
      console.log('  auto_explain on (statements of 5 ms or more go to the server log with their plans)');
    }
    const load = await loadAverage();
    const seeded: Record<Kind, number[]> = { create: [], edit: [], delete: [] };
    for (let t = 0; t < TRIALS; t++) await cycle(TRIAL_FIRST_PORT + t, seeded);
    console.log(`\nforward-mutation, ${kind}: ${FORWARDS} forwards seeded in ${seedSeconds.toFixed(1)} s; load average ${load} → ${await loadAverage()}`);
    summary('empty   ', baseline);
    summary('seeded  ', seeded);
  } finally {
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await exited;
    }
    await controller?.close().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    if (created.database) await dropBenchDatabase(created.database);
  }
}

/** Resolves once the event loop has been quiet for 2 s (no 50 ms timer more than 20 ms late); at most 120 s. */
async function atRest(): Promise<void> {
  const end = Date.now() + 120_000;
  let quietSince = Date.now();
  while (Date.now() < end && Date.now() - quietSince < 2000) {
    const asked = Date.now();
    await new Promise((r) => setTimeout(r, 50));
    if (Date.now() - asked > 70) quietSince = Date.now();
  }
}

for (const kind of STORES) await runStore(kind);
