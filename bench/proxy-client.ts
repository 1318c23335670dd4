/**
 * HTTP client of bench/proxy.ts, run as its own node process so that neither the load nor the
 * polling competes with the controller's event loop. Two modes:
 *
 *   node proxy-client.ts load ADDRESS PORT HOST CONCURRENCY WARMUP_MS DURATION_MS
 *     CONCURRENCY keep-alive connections (node:http Agent, keepAlive, maxSockets CONCURRENCY), each
 *     sending `GET /` with `Host: HOST` one after another. A reply counts when it is a 200 with a
 *     non-empty body (Caddy answers a host without a route with an empty 200, which must not count).
 *     Replies finished during DURATION_MS, after WARMUP_MS, are counted and timed. Prints `start`
 *     when the counted window opens, then one JSON line (`HttpLoadResult`) when it closes.
 *
 *   node proxy-client.ts probe PORT
 *     On each stdin line `probe ID HOST DEADLINE_MS` it sends `GET /` with `Host: HOST` to
 *     127.0.0.1:PORT on a new connection each time, one attempt every 2 ms, until the reply is the
 *     backend's (its JSON names HOST as the host it saw). Prints `ready ID SERVED` once the first
 *     attempt has finished (SERVED 1 if it already succeeded), then `ok ID NS` with the
 *     CLOCK_MONOTONIC time the successful reply was complete (the caller's
 *     `process.hrtime.bigint()` clock), or `timeout ID` after DEADLINE_MS.
 */
import { Agent, request } from 'node:http';
import { createInterface } from 'node:readline';

/** What one load run measured. */
export interface HttpLoadResult {
  requests: number;
  /** Replies that were not a 200 with a body, and requests that failed, by kind. */
  failures: Record<string, number>;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** This process's CPU time over the window, as a share of one core. */
  cpuShare: number;
}

const PROBE_INTERVAL_MS = 2;
const PROBE_TIMEOUT_MS = 1000;

interface Reply {
  status: number;
  body: string;
}

function get(options: { address: string; port: number; host: string; agent: Agent | false; timeoutMs: number }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: options.address,
        port: options.port,
        path: '/',
        method: 'GET',
        headers: { host: options.host },
        agent: options.agent,
        timeout: options.timeoutMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function load(args: string[]): Promise<void> {
  const [address, port, host, concurrency, warmupMs, durationMs] = args;
  if (!address || !port || !host || !concurrency || !warmupMs || !durationMs) {
    throw new Error('usage: proxy-client.ts load ADDRESS PORT HOST CONCURRENCY WARMUP_MS DURATION_MS');
  }
  const n = Number(concurrency);
  const agent = new Agent({ keepAlive: true, maxSockets: n, maxFreeSockets: n });
  let counting = false;
  let stopped = false;
  let requests = 0;
  let latencies = new Float64Array(1 << 16);
  const failures: Record<string, number> = {};
  const fail = (kind: string) => {
    if (counting) failures[kind] = (failures[kind] ?? 0) + 1;
  };
  const worker = async () => {
    while (!stopped) {
      const start = process.hrtime.bigint();
      try {
        const reply = await get({ address, port: Number(port), host, agent, timeoutMs: 5000 });
        if (reply.status !== 200) fail(`http-${reply.status}`);
        else if (reply.body.length === 0) fail('empty-body');
        else if (counting) {
          if (requests === latencies.length) {
            const bigger = new Float64Array(latencies.length * 2);
            bigger.set(latencies);
            latencies = bigger;
          }
          latencies[requests++] = Number(process.hrtime.bigint() - start) / 1e6;
        }
      } catch (error) {
        fail((error as NodeJS.ErrnoException).code ?? (error as Error).message);
      }
    }
  };
  const workers = Array.from({ length: n }, () => worker());
  await new Promise((r) => setTimeout(r, Number(warmupMs)));
  counting = true;
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  console.log('start');
  await new Promise((r) => setTimeout(r, Number(durationMs)));
  counting = false;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  stopped = true;
  await Promise.all(workers);
  agent.destroy();
  const sorted = latencies.slice(0, requests).sort();
  const result: HttpLoadResult = {
    requests,
    failures,
    seconds,
    perSecond: requests / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    cpuShare: (cpu.user + cpu.system) / 1e6 / seconds,
  };
  console.log(JSON.stringify(result));
}

/** Whether the reply is the backend's answer for `host` (through Caddy's route for it). */
function isBackendReply(reply: Reply, host: string): boolean {
  if (reply.status !== 200 || reply.body === '') return false;
  try {
    return (JSON.parse(reply.body) as { host?: string }).host === host;
  } catch {
    return false;
  }
}

async function probe(port: number, id: string, host: string, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let first = true;
  for (;;) {
    let served = false;
    try {
      served = isBackendReply(await get({ address: '127.0.0.1', port, host, agent: false, timeoutMs: PROBE_TIMEOUT_MS }), host);
    } catch {
      // not answered yet
    }
    const at = process.hrtime.bigint();
    if (first) console.log(`ready ${id} ${served ? 1 : 0}`);
    first = false;
    if (served) return void console.log(`ok ${id} ${at}`);
    if (Date.now() > deadline) return void console.log(`timeout ${id}`);
    await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'load') {
  await load(rest);
} else if (mode === 'probe') {
  const port = Number(rest[0]);
  if (!port) throw new Error('usage: proxy-client.ts probe PORT');
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [command, id, host, deadlineMs] = line.trim().split(' ');
    if (command !== 'probe' || !id || !host || !deadlineMs) throw new Error(`proxy-client: cannot parse "${line}"`);
    void probe(port, id, host, Number(deadlineMs));
  });
  process.stdin.once('end', () => process.exit(0));
} else {
  throw new Error('usage: proxy-client.ts load … | probe PORT');
}
