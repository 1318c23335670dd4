/**
 * What bench/nat-scale.ts and bench/nat-breakdown.ts share: timing and statistics, the helper
 * scripts run in the lab's namespaces (load generator, server, prober), CPU sampling from /proc and
 * one load run with its CPU accounting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LabNamespace, NetnsLab } from '@gatehouse/sdk/testkit';
import type { LoadResult } from './tcp-load.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The monotonic clock in nanoseconds. */
export function nowNs(): bigint {
  return process.hrtime.bigint();
}

/** Milliseconds since `start` (from `nowNs`). */
export function msSince(start: bigint): number {
  return Number(nowNs() - start) / 1e6;
}

/** How long `work` took, in milliseconds. */
export async function timedMs(work: () => Promise<unknown>): Promise<number> {
  const start = nowNs();
  await work();
  return msSince(start);
}

/** The median of `values`. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  return sorted.length % 2 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The `p`th percentile of `values` (nearest rank). */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** "median 1.2, p99 3.4, max 5.6" of times in ms. */
export function timeStats(values: readonly number[]): string {
  return `median ${median(values).toFixed(1)}, p99 ${percentile(values, 99).toFixed(1)}, max ${Math.max(...values).toFixed(1)}`;
}

/** Child processes this benchmark started; stopped by PID on exit, failure or Ctrl-C. */
const children = new Set<ChildProcess>();

/** Stops every helper still running, by PID. */
export function stopChildren(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
}

/** A helper script running in a namespace, with its stdout as lines. */
export interface Helper {
  readonly process: ChildProcess;
  readonly lines: Interface;
}

/**
 * Starts one of the helper scripts under bench/nat-scale/ inside a namespace with the same node and
 * TypeScript loader as this process (`ip netns exec` execs node, so the child's PID is node's).
 */
export function spawnHelper(ns: LabNamespace, script: string, args: readonly string[]): Helper {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, ...process.execArgv, join(HERE, script), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return { process: child, lines: createInterface({ input: child.stdout! }) };
}

/** Resolves with the first stdout line of `helper` that `match` accepts; rejects when its output ends first. */
export function nextLine(helper: Helper, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no expected output within ${timeoutMs} ms`)), timeoutMs);
    const onClose = () => finish(new Error(`helper exited (${helper.process.exitCode ?? helper.process.signalCode}) before the expected output`));
    const onLine = (line: string) => {
      if (match(line)) finish(line);
    };
    function finish(result: string | Error): void {
      clearTimeout(timer);
      helper.lines.off('line', onLine);
      helper.lines.off('close', onClose);
      if (result instanceof Error) reject(result);
      else resolve(result);
    }
    helper.lines.on('line', onLine);
    helper.lines.once('close', onClose);
  });
}

/** The long-lived prober in the client namespace (bench/nat-scale/tcp-probe.ts). */
export class Prober {
  private readonly helper: Helper;
  private readonly waiting = new Map<string, (words: string[]) => void>();
  private nextId = 0;

  constructor(ns: LabNamespace) {
    this.helper = spawnHelper(ns, 'tcp-probe.ts', []);
    this.helper.lines.on('line', (line) => {
      const [kind, id, ...rest] = line.split(' ');
      this.waiting.get(`${kind} ${id}`)?.(rest);
    });
  }

  /**
   * Starts polling address:port; `ready` resolves once the first attempt has finished, `connected`
   * with the monotonic time of the first successful connection (undefined after the deadline).
   */
  probe(address: string, port: number, deadlineMs: number): { ready: Promise<void>; connected: Promise<bigint | undefined> } {
    const id = String(this.nextId++);
    const ready = new Promise<void>((resolve) => this.waiting.set(`ready ${id}`, () => resolve()));
    const connected = new Promise<bigint | undefined>((resolve) => {
      this.waiting.set(`ok ${id}`, ([at]) => resolve(BigInt(at!)));
      this.waiting.set(`timeout ${id}`, () => resolve(undefined));
    });
    this.helper.process.stdin!.write(`probe ${id} ${address} ${port} ${deadlineMs}\n`);
    void connected.then(() => ['ready', 'ok', 'timeout'].forEach((kind) => this.waiting.delete(`${kind} ${id}`)));
    return { ready, connected };
  }

  close(): void {
    this.helper.process.stdin!.end();
  }
}

/** CPU time of the whole machine in USER_HZ ticks (busy, and its softirq part) and of every process. */
export interface CpuSnapshot {
  at: bigint;
  busy: number;
  softirq: number;
  processes: Map<number, { name: string; ticks: number }>;
}

// /proc reports CPU time in USER_HZ ticks, 100 per second on Linux
const TICKS_PER_SECOND = 100;

export async function cpuSnapshot(): Promise<CpuSnapshot> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number) as number[];
  const processes = new Map<number, { name: string; ticks: number }>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // kernel threads carry their CPU in the name (ksoftirqd/1, kworker/0:2-events): group them by kind
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\/.*$/, '');
      processes.set(Number(entry), { name, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // exited meanwhile
    }
  }
  return { at: nowNs(), busy: user! + nice! + system! + irq! + softirq! + steal!, softirq: softirq!, processes };
}

/**
 * Where the CPU went between two snapshots, in cores (1 = one core busy all the time). Softirq time
 * (where forwarding and NAT run) is also charged to the process it interrupted, so it overlaps the
 * load generator's and the server's figures.
 */
export interface CpuUse {
  busy: number;
  softirq: number;
  server: number;
  /** CPU of every other process (this benchmark's own orchestrator included, idle while counting), mostly other people's. */
  others: number;
  /** The largest other consumers by process name. */
  top: string;
}

export function cpuUse(before: CpuSnapshot, after: CpuSnapshot, loadPid: number, serverPid: number): CpuUse {
  const seconds = Number(after.at - before.at) / 1e9;
  const cores = (ticks: number) => ticks / TICKS_PER_SECOND / seconds;
  const byName = new Map<string, number>();
  let othersTicks = 0;
  for (const [pid, p] of after.processes) {
    if (pid === loadPid || pid === serverPid) continue;
    const ticks = p.ticks - (before.processes.get(pid)?.ticks ?? 0);
    if (ticks <= 0) continue;
    othersTicks += ticks;
    byName.set(p.name, (byName.get(p.name) ?? 0) + ticks);
  }
  const server = cores((after.processes.get(serverPid)?.ticks ?? 0) - (before.processes.get(serverPid)?.ticks ?? 0));
  const busy = cores(after.busy - before.busy);
  const softirq = cores(after.softirq - before.softirq);
  const top = [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([name, ticks]) => `${name} ${cores(ticks).toFixed(2)}`)
    .join(', ');
  return { busy, softirq, server, others: cores(othersTicks), top };
}

/** Runs `work` for 0 … count-1 one after the other. */
export async function sequential<T>(count: number, work: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < count; i++) results.push(await work(i));
  return results;
}

/** How a load run drives the forward: connections in flight, warm-up and counted window. */
export interface LoadOptions {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

/** A load run's figures: what the load generator counted, where the CPU went, conntrack around the window. */
export interface LoadFigures extends LoadResult {
  cpu: CpuUse;
  conntrackBefore: number;
  conntrackAfter: number;
}

/** Runs the load generator against one forward and samples CPU and conntrack around its counted window. */
export async function loadRun(
  client: LabNamespace,
  f: { hostAddress: string; hostPort: number },
  serverPid: number,
  conntrack: Conntrack,
  options: LoadOptions,
): Promise<LoadFigures> {
  // every window starts from an empty conntrack table: the previous window's ~30,000 reset
  // connections stay in CLOSE state until the kernel's garbage collector gets to them (up to a
  // minute), and a window that starts among them pays for them (seen: a variant installed in
  // milliseconds right after another window ran ~30 % slower than after an install that took seconds)
  await conntrack.flush();
  const conntrackBefore = await conntrack.count();
  const load = spawnHelper(client, 'tcp-load.ts', [
    f.hostAddress,
    String(f.hostPort),
    String(options.concurrency),
    String(options.warmupMs),
    String(options.durationMs),
  ]);
  const result = nextLine(load, (l) => l.startsWith('{'), options.warmupMs + options.durationMs + 30_000);
  await nextLine(load, (l) => l === 'start', options.warmupMs + 30_000);
  const before = await cpuSnapshot();
  const parsed = JSON.parse(await result) as LoadResult;
  const after = await cpuSnapshot();
  const conntrackAfter = await conntrack.count();
  return { ...parsed, cpu: cpuUse(before, after, load.process.pid!, serverPid), conntrackBefore, conntrackAfter };
}

/** Connections per CPU-second of the load generator: the NAT path runs in softirq in its context and is charged to it. */
export function perCpuSecond(x: LoadResult): number {
  return x.perSecond / x.cpuShare;
}

/** The lab's addresses: the client, the host's public addresses (on its client-side link) and the instance's server. */
export interface NatLabAddresses {
  client: string;
  publicAddresses: readonly string[];
  target: { address: string; port: number };
}

/** A namespace's conntrack table: how many entries it holds, and emptying it. */
export interface Conntrack {
  count(): Promise<number>;
  flush(): Promise<void>;
}

/** The NAT lab's namespaces and its server. */
export interface NatLab {
  host: LabNamespace;
  client: LabNamespace;
  vm: LabNamespace;
  server: Helper;
  /** The host namespace's conntrack table. */
  conntrack: Conntrack;
}

/**
 * Builds the lab: client ── host (ip_forward, the NAT under test) ── instance running the server.
 *   client CLIENT/24 ── host PUBLIC…/24 (one link) and 10.0.0.1/24 ── instance TARGET/24, default route via the host
 */
export async function natLab(lab: NetnsLab, addresses: NatLabAddresses): Promise<NatLab> {
  const host = await lab.namespace('host');
  const client = await lab.namespace('cli');
  const vm = await lab.namespace('vm');
  const [first, ...others] = addresses.publicAddresses;
  const { ifB: publicIf } = await lab.link(client, `${addresses.client}/24`, host, `${first}/24`);
  for (const address of others) await host.exec('ip', ['addr', 'add', `${address}/24`, 'dev', publicIf]);
  await lab.link(host, '10.0.0.1/24', vm, `${addresses.target.address}/24`);
  await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
  await host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await client.exec('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65535']);
  const server = spawnHelper(vm, 'tcp-server.ts', [addresses.target.address, String(addresses.target.port)]);
  await nextLine(server, (l) => l === 'listening', 15_000);
  const conntrack: Conntrack = {
    count: async () => Number((await host.exec('cat', ['/proc/sys/net/netfilter/nf_conntrack_count'])).trim()),
    flush: async () => {
      // conntrack-tools prints the number of entries it deleted on stderr; nothing to read
      await host.exec('conntrack', ['-F']);
    },
  };
  return { host, client, vm, server, conntrack };
}

/** The machine's load averages (1, 5, 15 minutes), as `uptime` prints them. */
export async function loadAverage(): Promise<string> {
  return (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
}
