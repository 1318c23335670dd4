/**
 * Traffic statistics benchmark (issue 13): BENCH_TRAFFIC_AGENTS simulated agents (default 10)
 * with BENCH_TRAFFIC_INSTANCES instances between them (default 500, one NIC each) report every
 * second through the agent protocol's `reportTraffic` mutation over HTTP with their agent tokens
 * (raw cumulative counters growing by 1–20 Mbit/s per NIC, a sequence and the reading's time),
 * while BENCH_TRAFFIC_SUBSCRIBERS graphql-ws clients (default 1,000, one connection each) each
 * watch BENCH_TRAFFIC_WATCH instances (default 50, spread over the hosts) on `trafficUpdated`.
 * The controller runs in its own process (bench/traffic-controller.ts), on PGlite (data on disk)
 * and on a fresh database of the PostgreSQL server (DATABASE_URL, default 127.0.0.1:5432), for
 * BENCH_TRAFFIC_SECONDS (default 60) after a warm-up of BENCH_TRAFFIC_WARMUP_S (default 5).
 *
 * Measured over the run: delivery latency from the report's reading time (`at`, set by the agent
 * just before it sends) to the subscriber's receipt (p50/p99); the controller's CPU (utime+stime
 * from /proc, in cores); its RSS every second (printed: at the start, at the end of the first half
 * and at the end, and the trend of all samples); database rows inserted/updated/deleted per second
 * (pg_stat_user_tables). Targets: p99 < 200 ms, CPU < 1 core, no RSS growth, judged on what a
 * leak grows: the memory left right after the full (mark-compact) collections (heap used +
 * external, which holds PGlite's WebAssembly memory), the median of the run's second half at most
 * 10 % above that of its first half (a shrink is no growth). RSS itself follows the old
 * generation's saw-tooth between collections (period 10–20 s, about a quarter of a run) and V8
 * gives pages back lazily after them: in a 120 s run whose heap after each of its 9 full
 * collections stayed at 95–103 MB, the medians of one-second RSS samples over the second and last
 * quarters still differed by +11.3 %, and in a 60 s run with the heap at 96–97 MB after each
 * collection, RSS right after them went from 379–398 MB to 410–505 MB. With fewer than two full
 * collections in a half, the RSS quarter medians are compared instead. Also printed: the memory after each full
 * collection (heap, external, RSS), the agents' report round trip and this process's CPU (the
 * subscribers and agents share it: if it nears a core, latency is the load generator's too).
 *
 *   npx tsx bench/traffic.ts     (BENCH_TRAFFIC_SECONDS=60; BENCH_TRAFFIC_STORES=pglite,postgres)
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { REPORT_TRAFFIC_MUTATION, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import { createTestDatabase, postgresReachable } from '../core/server/src/testing/stores.js';

const AGENTS = Number(process.env.BENCH_TRAFFIC_AGENTS ?? 10);
const INSTANCES = Number(process.env.BENCH_TRAFFIC_INSTANCES ?? 500);
const SUBSCRIBERS = Number(process.env.BENCH_TRAFFIC_SUBSCRIBERS ?? 1000);
const WATCH = Number(process.env.BENCH_TRAFFIC_WATCH ?? 50);
const SECONDS = Number(process.env.BENCH_TRAFFIC_SECONDS ?? 60);
const WARMUP_S = Number(process.env.BENCH_TRAFFIC_WARMUP_S ?? 5);
const STORES = (process.env.BENCH_TRAFFIC_STORES ?? 'pglite,postgres').split(',');
const ERR = '... on Error { code message field value }';
const CLK_TCK = 100;
/** Subscribers connecting at once. */
const CONNECT_BATCH = 50;

interface Controller {
  child: ChildProcess;
  readyAt: number;
  url: string;
  secret: string;
  rows(): Promise<number>;
  /** The controller's `process.memoryUsage()`. */
  memory(): Promise<NodeJS.MemoryUsage>;
  /** The controller's memory right after each full collection so far. */
  gcs(): Promise<{ at: number; heapUsed: number; rss: number; external: number }[]>;
  stop(): Promise<void>;
}

/** Sends `{ type }` to the controller and waits for its answer of that type. */
function ask<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve) => {
    const listener = (m: { type: string }) => {
      if (m.type !== type) return;
      child.off('message', listener);
      resolve(m as T);
    };
    child.on('message', listener);
    child.send({ type });
  });
}

function startControllerProcess(env: Record<string, string>): Promise<Controller> {
  const child = fork(join(dirname(fileURLToPath(import.meta.url)), 'traffic-controller.ts'), [], {
    // BENCH_TRAFFIC_CPU_PROF=<dir>: the controller writes a V8 CPU profile there (open it in Chrome's DevTools)
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_TRAFFIC_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_TRAFFIC_CPU_PROF] : [])],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`controller exited with ${code}`)));
    child.once('message', (m: { type: string; url: string; secret: string }) =>
      resolve({
        child,
        readyAt: Date.now(),
        url: m.url,
        secret: m.secret,
        rows: () => ask<{ n: number }>(child, 'rows').then((r) => r.n),
        memory: () => ask<NodeJS.MemoryUsage>(child, 'memory'),
        gcs: () => ask<{ list: { at: number; heapUsed: number; rss: number; external: number }[] }>(child, 'gcs').then((r) => r.list),
        stop: () =>
          new Promise((res) => {
            child.removeAllListeners('exit');
            child.once('exit', () => res());
            child.send({ type: 'stop' });
            setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
          }),
      }),
    );
  });
}

/**
 * RSS growth over a run from one-second samples: the median of the last quarter against that of
 * the second (the first holds the warm-up's settling), and the least-squares trend of all samples.
 */
function rssTrend(samples: { s: number; rss: number }[]): { min: number; max: number; early: number; late: number; growth: number; slopeMbPerMin: number } {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const q = Math.floor(samples.length / 4);
  const values = samples.map((x) => x.rss);
  const early = median(values.slice(q, 2 * q));
  const late = median(values.slice(3 * q));
  const n = samples.length;
  const meanS = samples.reduce((a, x) => a + x.s, 0) / n;
  const meanR = values.reduce((a, x) => a + x, 0) / n;
  const cov = samples.reduce((a, x) => a + (x.s - meanS) * (x.rss - meanR), 0);
  const varS = samples.reduce((a, x) => a + (x.s - meanS) ** 2, 0);
  return { min: Math.min(...values), max: Math.max(...values), early, late, growth: late / early - 1, slopeMbPerMin: ((cov / varS) * 60) / 1024 / 1024 };
}

/** CPU seconds (user + system) and RSS bytes of a process, from /proc. */
function procStats(pid: number): { cpuS: number; rss: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuS = (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
  return { cpuS, rss };
}

async function gql<T = any>(url: string, token: string, query: string, variables?: Record<string, unknown>): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown };
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data!;
}

const percentile = (sorted: Float64Array, p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
const verdict = (ok: boolean) => (ok ? 'MET' : 'NOT MET');

async function runOn(store: string): Promise<void> {
  let database: { url: string; drop(): Promise<void> } | undefined;
  let dataDir: string | undefined;
  if (store === 'postgres') {
    if (!(await postgresReachable())) {
      console.log(`[traffic ${store}] PostgreSQL unreachable, skipped`);
      return;
    }
    database = await createTestDatabase();
  } else dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-traffic-'));
  const controller = await startControllerProcess(
    database ? { BENCH_TRAFFIC_STORE: 'postgres', BENCH_TRAFFIC_DB_URL: database.url } : { BENCH_TRAFFIC_STORE: 'pglite', BENCH_TRAFFIC_DATA_DIR: dataDir! },
  );
  const subscribers: WsClient[] = [];
  let stopAgents = false;
  const agentLoops: Promise<void>[] = [];
  try {
    const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, controller.secret, query, variables);
    // hosts, agent tokens, instances (instance i on host i % AGENTS)
    const hosts: { id: string; token: string; nics: { nicId: string; rate: number; rx: number; tx: number }[] }[] = [];
    for (let h = 0; h < AGENTS; h++) {
      const id = (await api(`mutation { createHost(input: { name: "bench-${h}", backend: LINUX }) { ... on CreateHostPayload { host { id } } ${ERR} } }`))
        .createHost.host.id as string;
      const token = (
        await api(
          `mutation ($hostId: ID!) { createApiToken(input: { name: "agent-${h}", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
          { hostId: id },
        )
      ).createApiToken.created.secret as string;
      hosts.push({ id, token, nics: [] });
    }
    const instanceIds: string[] = [];
    const setupStarted = performance.now();
    for (let i = 0; i < INSTANCES; i++) {
      const host = hosts[i % AGENTS]!;
      const r = await api(
        `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { ... on CreateInstancePayload { instance { id nics { id } } } ${ERR} } }`,
        { input: { hostId: host.id, name: `vm-${i}`, nics: [{ network: 'br0', allocate: [] }] } },
      );
      instanceIds.push(r.createInstance.instance.id);
      // 1–20 Mbit/s into the instance, a tenth of it out
      host.nics.push({ nicId: r.createInstance.instance.nics[0].id, rate: (1 + Math.random() * 19) * 125_000, rx: 0, tx: 0 });
    }
    console.log(`[traffic ${store}] ${AGENTS} hosts, ${INSTANCES} instances created in ${((performance.now() - setupStarted) / 1000).toFixed(1)} s`);

    // subscribers: subscriber k watches WATCH consecutive instances (spread over every host)
    let measuring = false;
    const latencies: number[] = [];
    /** The slowest delivery in each second, by seconds since the controller started (its rollup runs each minute from then). */
    const worstBySecond = new Map<number, number>();
    let messages = 0;
    const wsUrl = controller.url.replace('http://', 'ws://');
    let connecting: Promise<void>[] = [];
    for (let k = 0; k < SUBSCRIBERS; k++) {
      // connections open CONNECT_BATCH at a time: 1,000 handshakes at once on a busy machine outlast graphql-ws' 3 s init timeout
      if (connecting.length === CONNECT_BATCH) {
        await Promise.all(connecting);
        connecting = [];
      }
      const ids = Array.from({ length: WATCH }, (_, j) => instanceIds[(k * WATCH + j) % instanceIds.length]!);
      const client = createClient({
        url: wsUrl,
        webSocketImpl: WebSocket,
        retryAttempts: 0,
        lazy: false,
        connectionParams: { Authorization: `Bearer ${controller.secret}` },
        onNonLazyError: () => {},
      });
      subscribers.push(client);
      connecting.push(
        new Promise((resolve, reject) => {
          client.on('connected', () => resolve());
          client.on('closed', (e) =>
            reject(
              new Error(`subscriber ${k} closed before it connected: ${(e as { code?: number; reason?: string }).code} ${(e as { reason?: string }).reason}`),
            ),
          );
        }),
      );
      client.subscribe<{ trafficUpdated: { at: string } }>(
        { query: 'subscription($ids: [ID!]) { trafficUpdated(instanceIds: $ids) { at instances { instanceId rxBps txBps } } }', variables: { ids } },
        {
          next: (m) => {
            const received = Date.now();
            if (!measuring || !m.data) return;
            messages++;
            const latency = received - Date.parse(m.data.trafficUpdated.at);
            latencies.push(latency);
            const second = Math.floor((received - controller.readyAt) / 1000);
            worstBySecond.set(second, Math.max(worstBySecond.get(second) ?? 0, latency));
          },
          error: (e) => console.error(`[traffic ${store}] subscriber ${k}: ${JSON.stringify(e)}`),
          complete: () => {},
        },
      );
    }
    await Promise.all(connecting);
    console.log(`[traffic ${store}] ${SUBSCRIBERS} subscribers connected`);

    // agents: one report per second each, spread over the second
    let reportErrors = 0;
    const reportTimes: number[] = [];
    let reports = 0;
    for (let h = 0; h < AGENTS; h++) {
      const host = hosts[h]!;
      agentLoops.push(
        (async () => {
          await new Promise((r) => setTimeout(r, (h * 1000) / AGENTS));
          let sequence = 0;
          let next = performance.now();
          let last = Date.now();
          while (!stopAgents) {
            const now = Date.now();
            const elapsedS = sequence === 0 ? 0 : (now - last) / 1000;
            last = now;
            for (const n of host.nics) {
              const jitter = 0.8 + Math.random() * 0.4;
              n.rx += Math.round(n.rate * elapsedS * jitter);
              n.tx += Math.round((n.rate / 10) * elapsedS * jitter);
            }
            const input: ReportTrafficInput = {
              hostId: host.id,
              bootId: `bench-boot-${h}`,
              sequence: ++sequence,
              nics: {
                at: new Date(now).toISOString(),
                intervalMs: 1000,
                counters: host.nics.map((n) => ({
                  nicId: n.nicId,
                  epoch: 'if1',
                  rxBytes: n.rx,
                  rxPackets: Math.round(n.rx / 1400),
                  txBytes: n.tx,
                  txPackets: Math.round(n.tx / 200),
                })),
              },
            };
            const sent = performance.now();
            await gql(controller.url, host.token, REPORT_TRAFFIC_MUTATION, { input }).then(
              () => {
                reports++;
                if (measuring) reportTimes.push(performance.now() - sent);
              },
              () => reportErrors++,
            );
            next += 1000;
            await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
          }
        })(),
      );
    }
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));

    // the measured run
    const pid = controller.child.pid!;
    const rowsStart = await controller.rows();
    const start = procStats(pid);
    const benchCpuStart = process.cpuUsage();
    const startedAt = performance.now();
    measuring = true;
    const reportsStart = reports;
    const rssSamples: { s: number; rss: number }[] = [];
    const memorySamples: NodeJS.MemoryUsage[] = [];
    const sampler = setInterval(() => {
      rssSamples.push({ s: (performance.now() - startedAt) / 1000, rss: procStats(pid).rss });
      void controller.memory().then((m) => memorySamples.push(m));
    }, 1000);
    await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 2));
    const half = procStats(pid);
    await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 2));
    const end = procStats(pid);
    clearInterval(sampler);
    const elapsedS = (performance.now() - startedAt) / 1000;
    measuring = false;
    const benchCpu = process.cpuUsage(benchCpuStart);
    const rowsEnd = await controller.rows();
    const runStart = Date.now() - elapsedS * 1000;
    const majorGcs = (await controller.gcs()).filter((g) => g.at >= runStart);
    const load = loadavg();

    const sorted = Float64Array.from(latencies).sort();
    const p50 = percentile(sorted, 50);
    const p99 = percentile(sorted, 99);
    const cores = (end.cpuS - start.cpuS) / elapsedS;
    const rss = rssTrend(rssSamples);
    const reportSorted = Float64Array.from(reportTimes).sort();
    const rowsPerS = rowsStart >= 0 && rowsEnd >= 0 ? (rowsEnd - rowsStart) / elapsedS : NaN;
    console.log(
      `[traffic ${store}] ${elapsedS.toFixed(1)} s: ${reports - reportsStart} reports (${reportErrors} failed), ${messages} messages delivered (${(messages / elapsedS).toFixed(0)}/s)`,
    );
    console.log(
      `[traffic ${store}] report round trip (agent side) p50 ${percentile(reportSorted, 50).toFixed(0)} ms, p99 ${percentile(reportSorted, 99).toFixed(0)} ms; this process (agents + subscribers) ${((benchCpu.user + benchCpu.system) / 1e6 / elapsedS).toFixed(2)} cores`,
    );
    console.log(`[traffic ${store}] delivery latency p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms, max ${sorted.at(-1)?.toFixed(0)} ms`);
    const slowest = [...worstBySecond].sort((a, b) => b[1] - a[1]).slice(0, 5);
    console.log(`[traffic ${store}] slowest seconds (since the controller started): ${slowest.map(([t, ms]) => `+${t} s ${ms.toFixed(0)} ms`).join(', ')}`);
    console.log(`[traffic ${store}] controller CPU ${cores.toFixed(2)} cores; RSS start ${mb(start.rss)}, half ${mb(half.rss)}, end ${mb(end.rss)}`);
    console.log(
      `[traffic ${store}] RSS over ${rssSamples.length} one-second samples: min ${mb(rss.min)}, max ${mb(rss.max)}, second-quarter median ${mb(rss.early)}, last-quarter median ${mb(rss.late)}, trend ${rss.slopeMbPerMin.toFixed(1)} MB/min`,
    );
    // what RSS is made of, medians of the same quarters: the JS heap (a leak of objects grows heapUsed) or memory outside it
    const quarter = (xs: number[], from: number, to: number) => {
      const part = xs.slice(Math.floor((xs.length * from) / 4), Math.floor((xs.length * to) / 4)).sort((a, b) => a - b);
      return part[Math.floor(part.length / 2)] ?? NaN;
    };
    const breakdown = (['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'] as const)
      .map((k) => {
        const xs = memorySamples.map((m) => m[k]);
        return `${k} ${mb(quarter(xs, 1, 2))} → ${mb(quarter(xs, 3, 4))}`;
      })
      .join(', ');
    // the lowest heapUsed of a quarter is what the collector left alive in it: a leak raises it, a saw-tooth does not
    const floor = (from: number, to: number) =>
      Math.min(...memorySamples.slice(Math.floor((memorySamples.length * from) / 4), Math.floor((memorySamples.length * to) / 4)).map((m) => m.heapUsed));
    console.log(`[traffic ${store}] memory, second-quarter median → last-quarter median: ${breakdown}`);
    console.log(`[traffic ${store}] heapUsed floor (lowest sample) per quarter: ${[0, 1, 2, 3].map((q) => mb(floor(q, q + 1))).join(', ')}`);
    console.log(
      `[traffic ${store}] after each of the ${majorGcs.length} full collections (s into the run: heapUsed / external / RSS): ${majorGcs
        .map((g) => `${((g.at - runStart) / 1000).toFixed(0)} s: ${mb(g.heapUsed)} / ${mb(g.external)} / ${mb(g.rss)}`)
        .join('; ')}`,
    );
    console.log(`[traffic ${store}] database rows written ${rowsPerS.toFixed(0)}/s`);
    console.log(`[traffic ${store}] load average ${load.map((l) => l.toFixed(2)).join(' ')}`);
    console.log(`[traffic ${store}] p99 < 200 ms: ${verdict(p99 < 200)} (${p99.toFixed(0)} ms)`);
    console.log(`[traffic ${store}] controller CPU < 1 core: ${verdict(cores < 1)} (${cores.toFixed(2)})`);
    // memory right after full collections: what a leak grows; RSS between them is the old generation's saw-tooth
    const median = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const m = sorted.length / 2;
      return sorted.length === 0 ? NaN : sorted.length % 2 ? sorted[Math.floor(m)]! : (sorted[m - 1]! + sorted[m]!) / 2;
    };
    const inHalf = (second: boolean) => majorGcs.filter((g) => g.at - runStart >= (elapsedS * 1000) / 2 === second);
    const live = (gcs: typeof majorGcs) => median(gcs.map((g) => g.heapUsed + g.external));
    const afterGcs = inHalf(false).length >= 2 && inHalf(true).length >= 2;
    const growth = afterGcs ? live(inHalf(true)) / live(inHalf(false)) - 1 : rss.growth;
    if (afterGcs)
      console.log(
        `[traffic ${store}] RSS right after full collections, median of the first half → second half: ${mb(median(inHalf(false).map((g) => g.rss)))} → ${mb(median(inHalf(true).map((g) => g.rss)))}`,
      );
    console.log(
      `[traffic ${store}] no RSS growth (${afterGcs ? `heap + external right after full collections, second half's median ${mb(live(inHalf(true)))} at most 10 % above the first half's ${mb(live(inHalf(false)))}` : "fewer than two full collections per half: RSS, last-quarter median at most 10 % above the second quarter's"}): ${verdict(growth <= 0.1)} (${(growth * 100).toFixed(1)} %)`,
    );
  } finally {
    stopAgents = true;
    await Promise.all(agentLoops);
    await Promise.all(subscribers.map((c) => c.dispose()));
    await controller.stop();
    await database?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}

console.log(
  `traffic bench: ${AGENTS} agents, ${INSTANCES} instances, ${SUBSCRIBERS} subscribers × ${WATCH} instances, ${SECONDS} s (+${WARMUP_S} s warm-up); ${STORES.join(', ')}`,
);
for (const store of STORES) await runOn(store);
process.exit(0);
