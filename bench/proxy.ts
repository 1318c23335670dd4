/**
 * Reverse proxy benchmark: Debian's Caddy (2.6.2) driven by Gatehouse's ProxyManager on PGlite, as
 * the controller runs it (its own Caddy with the admin API on a unix socket, access log on a unix
 * socket into the controller), with a web backend inside a network namespace whose address comes
 * from a Gatehouse pool. Proxies are created through the GraphQL API (served over HTTP on loopback
 * by this process) with tlsMode NONE, and requests go to Caddy on 127.0.0.1 with the proxy's Host.
 *
 *   root ns: load generator, prober, Caddy 127.0.0.1:<http>, controller ── veth 10.253.0.254 │ 10.253.0.1:8080 backend (ns)
 *
 * Measured:
 *  1. Requests per second through Caddy against direct to the backend, in the same run, the order
 *     reversed every other round: with 1 domain, and again with 1,000 domains, through the domain
 *     whose route is the last of the 1,000 and through the first (Caddy tries routes in order). The
 *     load generator is a separate node process (bench/proxy-client.ts: node:http keep-alive Agent,
 *     BENCH_PROXY_CONCURRENCY connections each sending GET / back to back; a reply counts when it is
 *     a 200 with a body), so it does not compete with the controller's event loop (which parses
 *     Caddy's access log). CPU of load generator, backend, Caddy and controller over the counted
 *     window is read from /proc; Caddy's CPU per request does not depend on what else runs.
 *  2. One new domain, created through the GraphQL API: the mutation's time, then until
 *     `manager.sync()` resolves, and from the mutation sent until a prober (its own process,
 *     polling every 2 ms on a new connection) gets the backend's reply through Caddy. With 0 proxies
 *     present (the 1st domain; deleted again after each trial) and with 1,000 present (the
 *     1,001st … 1,005th). The ProxyManager's sync steps and Caddy admin requests are timed by
 *     wrapping them on the instance, to say where the time goes.
 *  3. The initial full load of the 1,000 proxies: a fresh Caddy and a fresh ProxyManager.start().
 *
 *   npx tsx bench/proxy.ts     (as root, `caddy` on PATH; npm run build -w caddy-api-client -w @gatehouse/sdk first)
 *     BENCH_PROXY_CONCURRENCY=32 BENCH_PROXY_WARMUP_S=1 BENCH_PROXY_SECONDS=5 BENCH_PROXY_ROUNDS=3
 *     BENCH_PROXY_DOMAINS=10000 BENCH_PROXY_BULK=1000 BENCH_PROXY_TRIALS=5 BENCH_PROXY_FULL_LOADS=3 BENCH_PROXY_ACCESS_LOG=1 (0: Caddy without the access log)
 */
import 'reflect-metadata';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { count, eq } from 'drizzle-orm';
import { caddyAvailable, freePort } from 'caddy-api-client/testing';
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { TokenRevocations } from '../core/server/src/auth/token-revocations.js';
import { webProxies } from '../core/server/src/db/schema.js';
import { UserService, createContainer, createGatehouseYoga, openStore, type Actor, type Store } from '../core/server/src/index.js';
import { CaddySupervisor } from '../core/server/src/proxy/caddy-process.js';
import { ProxyManager, type ProxyManagerOptions } from '../core/server/src/proxy/proxy-manager.js';
import { WebProxyService } from '../core/server/src/services/web-proxy-service.js';
import { EventBusToken } from '../core/server/src/di/tokens.js';
import { ProxyManagerToken } from '../core/server/src/proxy/proxy-manager-token.js';
import { ROUTES_PATH } from '../core/server/src/proxy/caddy-routes.js';
import type { HttpLoadResult } from './proxy-client.js';

const CONCURRENCY = Number(process.env.BENCH_PROXY_CONCURRENCY ?? 32);
const WARMUP_MS = Number(process.env.BENCH_PROXY_WARMUP_S ?? 1) * 1000;
const DURATION_MS = Number(process.env.BENCH_PROXY_SECONDS ?? 5) * 1000;
const ROUNDS = Number(process.env.BENCH_PROXY_ROUNDS ?? 3);
const DOMAINS = Number(process.env.BENCH_PROXY_DOMAINS ?? 10_000);
/** Issue 20: creating this many proxies one call at a time until all APPLIED, < 5 s. */
const BULK = Number(process.env.BENCH_PROXY_BULK ?? 1000);
const TRIALS = Number(process.env.BENCH_PROXY_TRIALS ?? 5);
const FULL_LOADS = Number(process.env.BENCH_PROXY_FULL_LOADS ?? 3);
/** 0: Caddy without the access log the controller counts traffic from (a diagnostic; `gatehouse serve` always has it). */
const ACCESS_LOG = process.env.BENCH_PROXY_ACCESS_LOG !== '0';

// a subnet no test uses: the backend's namespace end and the root namespace's end of one veth
const BACKEND_ADDRESS = '10.253.0.1';
const GATEWAY = '10.253.0.254';
const CIDR = '10.253.0.0/24';
const BACKEND_PORT = 8080;
const NETWORK = 'br-bench-proxy';
const ZONE = 'bench.gh.test';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENT = join(HERE, 'proxy-client.ts');
/** The tests' backend: on every address, HTTP 8080 answers with a JSON of the address and Host it saw. */
const BACKEND = join(HERE, '..', 'core', 'server', 'test', 'support', 'proxy-backend.mjs');

const quiet = { info() {}, warn: (...a: unknown[]) => console.error(...a), error: (...a: unknown[]) => console.error(...a) };

function nowNs(): bigint {
  return process.hrtime.bigint();
}

function msBetween(start: bigint, end: bigint): number {
  return Number(end - start) / 1e6;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  return sorted.length % 2 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function ordinal(k: number): string {
  const suffix = k % 100 >= 11 && k % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][k % 10] ?? 'th');
  return `${k.toLocaleString('en-US')}${suffix}`;
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}x`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 60_000, everyMs = 50): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------------------------------------
// child processes (stopped by PID on exit, failure or Ctrl-C)

const children = new Set<ChildProcess>();
let caddyPid: () => number | undefined = () => undefined;

function stopChildren(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
}

interface Helper {
  readonly process: ChildProcess;
  readonly lines: Interface;
}

function spawnHelper(command: string, args: readonly string[]): Helper {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return { process: child, lines: createInterface({ input: child.stdout! }) };
}

/** node with the same TypeScript loader as this process, running bench/proxy-client.ts. */
function spawnClient(args: readonly string[]): Helper {
  return spawnHelper(process.execPath, [...process.execArgv, CLIENT, ...args]);
}

/** Resolves with the first stdout line of `helper` that `match` accepts; rejects when its output ends first. */
function nextLine(helper: Helper, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
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

async function stopHelper(helper: Helper | undefined): Promise<void> {
  const child = helper?.process;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** The long-lived prober (bench/proxy-client.ts probe): polls Caddy for a domain until the backend answers. */
class Prober {
  private readonly helper: Helper;
  private readonly waiting = new Map<string, (words: string[]) => void>();
  private nextId = 0;

  constructor(port: number) {
    this.helper = spawnClient(['probe', String(port)]);
    this.helper.lines.on('line', (line) => {
      const [kind, id, ...rest] = line.split(' ');
      this.waiting.get(`${kind} ${id}`)?.(rest);
    });
  }

  /** `ready` resolves once the first attempt finished (with whether it was served already), `served` with the monotonic time of the first success. */
  probe(host: string, deadlineMs: number): { ready: Promise<boolean>; served: Promise<bigint | undefined> } {
    const id = String(this.nextId++);
    const ready = new Promise<boolean>((resolve) => this.waiting.set(`ready ${id}`, ([served]) => resolve(served === '1')));
    const served = new Promise<bigint | undefined>((resolve) => {
      this.waiting.set(`ok ${id}`, ([at]) => resolve(BigInt(at!)));
      this.waiting.set(`timeout ${id}`, () => resolve(undefined));
    });
    this.helper.process.stdin!.write(`probe ${id} ${host} ${deadlineMs}\n`);
    void served.then(() => ['ready', 'ok', 'timeout'].forEach((kind) => this.waiting.delete(`${kind} ${id}`)));
    return { ready, served };
  }

  async close(): Promise<void> {
    this.helper.process.stdin!.end();
    await stopHelper(this.helper);
  }
}

// ------------------------------------------------------------------------------------------------
// CPU from /proc

// /proc reports CPU time in USER_HZ ticks, 100 per second on Linux
const TICKS_PER_SECOND = 100;

function processTicks(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function busyTicks(): number {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number) as number[];
  return user! + nice! + system! + irq! + softirq! + steal!;
}

type CpuRoles = 'backend' | 'caddy' | 'controller' | 'machine';

function cpuSnapshot(pids: Record<Exclude<CpuRoles, 'machine'>, number | undefined>): { at: bigint; ticks: Record<CpuRoles, number> } {
  return {
    at: nowNs(),
    ticks: { backend: processTicks(pids.backend), caddy: processTicks(pids.caddy), controller: processTicks(pids.controller), machine: busyTicks() },
  };
}

// ------------------------------------------------------------------------------------------------
// timing the ProxyManager's steps and Caddy admin requests (wrapped on the instances, no code changed)

interface Span {
  name: string;
  start: bigint;
  end: bigint;
}

class Recorder {
  spans: Span[] = [];

  reset(): void {
    this.spans = [];
  }

  /** Wraps the config sync's steps and the manager's Caddy client's one request method. */
  instrument(manager: ProxyManager): void {
    const steps = manager.configSync as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    for (const name of ['syncOnce', 'loadSites', 'loadAll', 'applyChanges', 'recordStatuses']) {
      const original = steps[name]!.bind(manager.configSync);
      steps[name] = async (...args: unknown[]) => {
        const start = nowNs();
        try {
          return await original(...args);
        } finally {
          this.spans.push({ name, start, end: nowNs() });
        }
      };
    }
    const client = manager.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const expectOk = client.expectOk!.bind(manager.client);
    client.expectOk = async (method: unknown, path: unknown, ...rest: unknown[]) => {
      const start = nowNs();
      let outcome = '';
      try {
        return await expectOk(method, path, ...rest);
      } catch (error) {
        outcome = ` → ${(error as { status?: number }).status ?? 'error'}`;
        throw error;
      } finally {
        this.spans.push({ name: `caddy ${String(method)} ${shortPath(String(path))}${outcome}`, start, end: nowNs() });
      }
    };
  }
}

function shortPath(path: string): string {
  return path
    .replace(/gh-proxy-[0-9a-f-]{36}/g, 'gh-proxy-<id>')
    .replace(/gh-hosts-[a-z0-9-]+-\d+/g, 'gh-hosts-<table>')
    .replace(/^\/config\/apps\/http\/servers\/gatehouse\/routes\/0\/handle\/0\/routes$/, '<exact routes>')
    .replace(/^\/config\/apps\/tls\//, 'tls/');
}

/** What one sync run did, from its spans. */
interface SyncRun {
  /** When the run started, from the origin given to `syncRuns` (the mutation sent). */
  startMs: number;
  totalMs: number;
  loadSitesMs: number;
  applyMs: number;
  recordMs: number;
  caddyMs: number;
  caddy: { name: string; ms: number }[];
}

function syncRuns(spans: readonly Span[], origin: bigint): SyncRun[] {
  return spans
    .filter((s) => s.name === 'syncOnce')
    .sort((a, b) => Number(a.start - b.start))
    .map((run) => {
      const inside = spans.filter((s) => s !== run && s.start >= run.start && s.end <= run.end);
      const sum = (name: string) => inside.filter((s) => s.name === name).reduce((t, s) => t + msBetween(s.start, s.end), 0);
      const caddy = inside.filter((s) => s.name.startsWith('caddy ')).map((s) => ({ name: s.name.slice(6), ms: msBetween(s.start, s.end) }));
      return {
        startMs: msBetween(origin, run.start),
        totalMs: msBetween(run.start, run.end),
        loadSitesMs: sum('loadSites'),
        applyMs: sum('applyChanges') + sum('loadAll'),
        recordMs: sum('recordStatuses'),
        caddyMs: caddy.reduce((t, c) => t + c.ms, 0),
        caddy,
      };
    });
}

// ------------------------------------------------------------------------------------------------

interface LoadRun extends HttpLoadResult {
  variant: string;
  cores: Record<'load' | CpuRoles, number>;
}

interface DomainTrial {
  domain: string;
  mutationMs: number;
  syncMs: number;
  servedMs: number;
  /** Sync runs that ran from the mutation sent until `manager.sync()` resolved. */
  runs: SyncRun[];
}

interface FullLoad {
  startMs: number;
  servedMs: number;
  run: SyncRun;
}

async function main(): Promise<void> {
  if (!(await labAvailable()) || !(await caddyAvailable())) {
    console.error('proxy: needs root, `ip netns` (it builds a network namespace) and `caddy` on PATH; nothing was measured');
    process.exitCode = 1;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-proxy-'));
  const lab = new NetnsLab();
  const rootIf = `${lab.prefix}r`;
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\nproxy: ${signal}, stopping Caddy and helpers by PID and deleting the lab's namespace`);
    stopChildren();
    const pid = caddyPid();
    if (pid !== undefined) process.kill(pid, 'SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    // exit runs the lab's synchronous cleanup (the namespace, with the veth pair)
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', stopChildren);

  let ns: LabNamespace | undefined;
  let backend: Helper | undefined;
  let store: Store | undefined;
  let caddy: CaddySupervisor | undefined;
  let manager: ProxyManager | undefined;
  let httpServer: Server | undefined;
  let prober: Prober | undefined;
  let revocations: TokenRevocations | undefined;
  try {
    // the instances' network: a namespace holding the backend's address, reached over a veth from here
    ns = await lab.namespace('web');
    await run('ip', ['link', 'add', rootIf, 'type', 'veth', 'peer', 'name', `${lab.prefix}i`, 'netns', ns.name]);
    await run('ip', ['addr', 'add', `${GATEWAY}/24`, 'dev', rootIf]);
    await run('ip', ['link', 'set', rootIf, 'up']);
    await ns.exec('ip', ['addr', 'add', `${BACKEND_ADDRESS}/24`, 'dev', `${lab.prefix}i`]);
    await ns.exec('ip', ['link', 'set', `${lab.prefix}i`, 'up']);
    // the backend also serves HTTPS on 8443 (unused here): it needs a certificate
    const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'backend-key.pem')];
    execFileSync('openssl', ['req', '-x509', ...keyArgs, '-subj', '/CN=backend.internal', '-out', join(dir, 'backend-cert.pem'), '-days', '2'], {
      stdio: 'ignore',
    });
    // `ip netns exec` execs node, so the child's PID is the backend's
    backend = spawnHelper('ip', ['netns', 'exec', ns.name, process.execPath, BACKEND, join(dir, 'backend-cert.pem'), join(dir, 'backend-key.pem')]);
    await nextLine(backend, (l) => l === 'ready', 15_000);

    // the controller: store, container, its own Caddy, the ProxyManager, the GraphQL API over HTTP
    const openedStore = await openStore({ kind: 'pglite' });
    store = openedStore;
    const container = createContainer(openedStore, { logger: quiet });
    const secret = (await container.resolve(UserService).bootstrapAdmin())!.secret;
    const actor: Actor = (await container.resolve(UserService).authenticate(secret, 'bench'))!;
    const httpPort = await freePort();
    let httpsPort = await freePort();
    while (httpsPort === httpPort) httpsPort = await freePort();
    const options = (logSocketPath: string): Omit<ProxyManagerOptions, 'admin' | 'adminConfig'> => ({
      // tlsMode NONE only: the ACME directory is never asked; a loopback address keeps it so
      settings: { listenHost: '127.0.0.1', httpPort, httpsPort, acme: { directoryUrl: 'https://127.0.0.1:9/directory' } },
      // as `gatehouse serve` runs it: Caddy's access log into the controller, traffic counted per proxy
      ...(ACCESS_LOG ? { logSocketPath } : {}),
    });
    const recorder = new Recorder();
    /** A fresh Caddy and a manager for it, registered for the API; `start` is timed by the caller. */
    const freshManager = async (n: number) => {
      caddy = new CaddySupervisor(join(dir, `caddy-${n}`), quiet);
      const supervisor = caddy;
      caddyPid = () => supervisor.pid;
      supervisor.start();
      const created = new ProxyManager(openedStore.db, container.resolve(EventBusToken), quiet, {
        admin: { socketPath: supervisor.socketPath },
        adminConfig: supervisor.adminConfig,
        ...options(join(dir, 'caddy-log.sock')),
      });
      container.registerInstance(ProxyManagerToken, created);
      recorder.instrument(created);
      await until('Caddy admin socket', async () => supervisor.pid && (await created.client.getConfig([])) && true, 15_000);
      return created;
    };
    const stopManager = async () => {
      await manager?.stop();
      manager = undefined;
      await caddy?.stop();
      caddy = undefined;
    };
    manager = await freshManager(0);
    await manager.start();

    const yoga = createGatehouseYoga(container, quiet);
    revocations = container.resolve(TokenRevocations);
    httpServer = createServer(yoga);
    const server = httpServer;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
    const gql = async (query: string, variables?: Record<string, unknown>): Promise<Record<string, any>> => {
      const response = await fetch(apiUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: Record<string, any>; errors?: { message: string }[] };
      if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
      const payload = Object.values(body.data!)[0] as { __typename?: string; message?: string };
      if (payload?.message) throw new Error(`${payload.__typename}: ${payload.message}`);
      return body.data!;
    };
    const createProxy = async (domain: string) =>
      (
        await gql(
          `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { id } } ... on Error { message } } }`,
          { input: { instanceId, domain, targetPort: BACKEND_PORT, tlsMode: 'NONE' } },
        )
      ).createWebProxy.webProxy.id as string;
    const deleteProxy = (id: string) =>
      gql(`mutation($id: ID!) { deleteWebProxy(input: { webProxyId: $id }) { __typename ... on Error { message } } }`, { id });
    const proxiesPresent = async () => (await openedStore.db.select({ n: count() }).from(webProxies))[0]!.n;
    const appliedPresent = async () => (await openedStore.db.select({ n: count() }).from(webProxies).where(eq(webProxies.status, 'applied')))[0]!.n;

    const hostId = (
      await gql(
        `mutation { createHost(input: { name: "bench-proxy", backend: LINUX }) { __typename ... on CreateHostPayload { host { id } } ... on Error { message } } }`,
      )
    ).createHost.host.id as string;
    await gql(
      `mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { __typename ... on CreateIpPoolPayload { pool { id } } ... on Error { message } } }`,
      { input: { name: 'bench-proxy', kind: 'PRIVATE', network: NETWORK, cidr: CIDR, gateway: GATEWAY } },
    );
    const instance = (
      await gql(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "web", nics: [{ network: "${NETWORK}" }] }) { __typename ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ... on Error { message } } }`,
        { h: hostId },
      )
    ).createInstance.instance as { id: string; nics: { addresses: { address: string }[] }[] };
    const instanceId = instance.id;
    if (instance.nics[0]?.addresses[0]?.address !== BACKEND_ADDRESS)
      throw new Error(`the instance got ${JSON.stringify(instance.nics)}, not ${BACKEND_ADDRESS}`);

    prober = new Prober(httpPort);
    const probe = prober;

    /** One new domain through the API: mutation, sync, first reply of the backend through Caddy. */
    const addDomain = async (domain: string): Promise<DomainTrial & { id: string }> => {
      await manager!.sync();
      const { ready, served } = probe.probe(domain, 30_000);
      if (await ready) throw new Error(`${domain} was served before it was created`);
      recorder.reset();
      const sent = nowNs();
      const id = await createProxy(domain);
      const responded = nowNs();
      await manager!.sync();
      const synced = nowNs();
      const at = await served;
      if (at === undefined) throw new Error(`${domain}: Caddy did not answer with the backend's reply within 30 s`);
      const [row] = await openedStore.db.select({ status: webProxies.status, error: webProxies.statusError }).from(webProxies).where(eq(webProxies.id, id));
      if (row?.status !== 'applied') throw new Error(`${domain}: ${row?.status} ${row?.error ?? ''}`);
      return {
        id,
        domain,
        mutationMs: msBetween(sent, responded),
        syncMs: msBetween(responded, synced),
        servedMs: msBetween(sent, at),
        runs: syncRuns(
          recorder.spans.filter((s) => s.start >= sent && s.end <= synced),
          sent,
        ),
      };
    };

    const loadRun = async (variant: string, target: { address: string; port: number; host: string }): Promise<LoadRun> => {
      const load = spawnClient(['load', target.address, String(target.port), target.host, String(CONCURRENCY), String(WARMUP_MS), String(DURATION_MS)]);
      const result = nextLine(load, (l) => l.startsWith('{'), WARMUP_MS + DURATION_MS + 60_000);
      await nextLine(load, (l) => l === 'start', WARMUP_MS + 30_000);
      const pids = { backend: backend!.process.pid, caddy: caddy?.pid, controller: process.pid };
      const before = cpuSnapshot(pids);
      const parsed = JSON.parse(await result) as HttpLoadResult;
      const after = cpuSnapshot(pids);
      await stopHelper(load);
      const seconds = msBetween(before.at, after.at) / 1000;
      const cores = (role: CpuRoles) => (after.ticks[role] - before.ticks[role]) / TICKS_PER_SECOND / seconds;
      const run: LoadRun = {
        ...parsed,
        variant,
        cores: { load: parsed.cpuShare, backend: cores('backend'), caddy: cores('caddy'), controller: cores('controller'), machine: cores('machine') },
      };
      const failures = Object.entries(run.failures);
      console.error(
        `  ${variant.padEnd(34)} ${run.perSecond.toFixed(0).padStart(6)} req/s  p50 ${run.p50Ms.toFixed(2)} ms  p99 ${run.p99Ms.toFixed(2)} ms  cores: load ${run.cores.load.toFixed(2)} backend ${run.cores.backend.toFixed(2)} caddy ${run.cores.caddy.toFixed(2)} controller ${run.cores.controller.toFixed(2)} machine (all processes) ${run.cores.machine.toFixed(2)}${failures.length ? `  failures ${failures.map(([k, v]) => `${k}:${v}`).join(' ')}` : ''}`,
      );
      return run;
    };
    /** ROUNDS rounds of direct and through Caddy for each host, order reversed every other round. */
    const loadRounds = async (viaCaddy: { variant: string; host: string }[]): Promise<LoadRun[]> => {
      const variants = [
        { variant: 'direct', target: { address: BACKEND_ADDRESS, port: BACKEND_PORT, host: `${BACKEND_ADDRESS}:${BACKEND_PORT}` } },
        ...viaCaddy.map(({ variant, host }) => ({ variant, target: { address: '127.0.0.1', port: httpPort, host } })),
      ];
      const runs: LoadRun[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        for (const { variant, target } of round % 2 === 0 ? variants : [...variants].reverse()) runs.push(await loadRun(variant, target));
      }
      return runs;
    };

    const loadStart = loadAverage();
    // 2a. the 1st domain, with no proxy present (deleted again after each trial)
    console.error(`proxy: lab ${lab.prefix}, Caddy on 127.0.0.1:${httpPort}; ${TRIALS} trials of the 1st domain (0 present)`);
    const firstTrials: DomainTrial[] = [];
    // one uncounted trial first: the API's, the manager's and Caddy's first calls are slower
    await deleteProxy((await addDomain(`warmup.${ZONE}`)).id);
    await manager.sync();
    for (let t = 0; t < TRIALS; t++) {
      if ((await proxiesPresent()) !== 0) throw new Error('proxies are present before a 1st-domain trial');
      const trial = await addDomain(`first-${t}.${ZONE}`);
      firstTrials.push(trial);
      console.error(
        `  ${trial.domain}: mutation ${trial.mutationMs.toFixed(1)} ms, sync ${trial.syncMs.toFixed(1)} ms, sent→served ${trial.servedMs.toFixed(1)} ms`,
      );
      await deleteProxy(trial.id);
      await manager.sync();
    }

    // 1a. requests per second with one domain
    console.error(`proxy: ${ROUNDS} rounds of direct / through Caddy, ${CONCURRENCY} connections, ${DURATION_MS / 1000} s after ${WARMUP_MS / 1000} s warm-up`);
    const loadDomain = `load.${ZONE}`;
    await addDomain(loadDomain);
    const oneDomainRuns = await loadRounds([{ variant: 'through Caddy, 1 domain', host: loadDomain }]);

    // the other proxies, through the service (same validation and audit as the API, without HTTP),
    // with the manager running: each creation's webProxyChanged event starts a sync, as in
    // production. The first BULK (1,000) are timed until all APPLIED (issue 20's row), the rest
    // bring the count to DOMAINS.
    const service = container.resolve(WebProxyService);
    const bulk = Math.min(BULK, DOMAINS - 1);
    console.error(`proxy: creating ${bulk} proxies one call at a time through WebProxyService.create with the manager running, until all APPLIED`);
    const bulkStart = nowNs();
    for (let i = 1; i <= bulk; i++) {
      await service.create(actor, { instanceId, domain: `d${i}.${ZONE}`, targetPort: BACKEND_PORT, tlsMode: 'none' });
    }
    const bulkCreatedMs = msBetween(bulkStart, nowNs());
    await until('all proxies APPLIED', async () => (await appliedPresent()) === bulk + 1, 600_000, 20);
    const bulkAppliedMs = msBetween(bulkStart, nowNs());
    console.error(`  created in ${(bulkCreatedMs / 1000).toFixed(2)} s, all APPLIED after ${(bulkAppliedMs / 1000).toFixed(2)} s`);
    if (DOMAINS - 1 > bulk) {
      console.error(`proxy: creating ${DOMAINS - 1 - bulk} more, to ${DOMAINS}`);
      const moreStart = nowNs();
      for (let i = bulk + 1; i < DOMAINS; i++) {
        await service.create(actor, { instanceId, domain: `d${i}.${ZONE}`, targetPort: BACKEND_PORT, tlsMode: 'none' });
      }
      await manager.sync();
      await until('all proxies APPLIED', async () => (await appliedPresent()) === DOMAINS, 600_000, 200);
      console.error(`  all ${DOMAINS} APPLIED after ${(msBetween(moreStart, nowNs()) / 1000).toFixed(1)} s`);
    }
    if ((await proxiesPresent()) !== DOMAINS) throw new Error(`${await proxiesPresent()} proxies present, expected ${DOMAINS}`);
    // the domain Caddy finds last (its host table is the last route, its mapping the last of the
    // table) and the one it finds first, read from Caddy's config
    const { lastDomain, firstDomain, tables } = await routePositions(manager.client);
    const lastServed = probe.probe(lastDomain, 30_000);
    if ((await lastServed.served) === undefined) throw new Error(`${lastDomain} is not served after the bulk creation`);

    // 3. full load of DOMAINS proxies: a fresh Caddy (no config) and a fresh ProxyManager.start()
    console.error(`proxy: ${FULL_LOADS} full loads of ${DOMAINS} proxies into a fresh Caddy`);
    const fullLoads: FullLoad[] = [];
    for (let n = 1; n <= FULL_LOADS; n++) {
      await stopManager();
      const fresh = await freshManager(n);
      const { ready, served } = probe.probe(lastDomain, 60_000);
      if (await ready) throw new Error(`${lastDomain} was served by a fresh Caddy before the load`);
      manager = fresh;
      recorder.reset();
      const start = nowNs();
      await fresh.start();
      const started = nowNs();
      const at = await served;
      if (at === undefined) throw new Error(`${lastDomain}: not served within 60 s of a full load`);
      const [run] = syncRuns(recorder.spans, start);
      fullLoads.push({ startMs: msBetween(start, started), servedMs: msBetween(start, at), run: run! });
      console.error(
        `  start() ${msBetween(start, started).toFixed(0)} ms (loadSites ${run!.loadSitesMs.toFixed(0)}, Caddy load ${run!.caddyMs.toFixed(0)}, recordStatuses ${run!.recordMs.toFixed(0)}), last domain served after ${msBetween(start, at).toFixed(0)} ms`,
      );
    }
    if ((await appliedPresent()) !== DOMAINS) throw new Error('not every proxy is APPLIED after the full load');

    // 1b. requests per second with DOMAINS domains, through the domain whose route Caddy tries
    // last, and through the one it tries first (created before the others)
    console.error(`proxy: ${ROUNDS} rounds of direct / through Caddy with ${DOMAINS} domains (${lastDomain}, found last; ${firstDomain}, found first)`);
    const manyDomainRuns = await loadRounds([
      { variant: `through Caddy, ${DOMAINS} domains, last route`, host: lastDomain },
      { variant: `through Caddy, ${DOMAINS} domains, first route`, host: firstDomain },
    ]);

    // 2b. the DOMAINS+1st … domains
    console.error(`proxy: ${TRIALS} trials of the ${ordinal(DOMAINS + 1)}… domain (${DOMAINS}… present)`);
    const laterTrials: DomainTrial[] = [];
    for (let t = 0; t < TRIALS; t++) {
      const trial = await addDomain(`later-${t}.${ZONE}`);
      laterTrials.push(trial);
      const applying = trial.runs.find((r) => r.caddy.some((c) => /^(POST|PUT|PATCH) /.test(c.name)));
      console.error(
        `  ${trial.domain} (${ordinal(DOMAINS + 1 + t)}): mutation ${trial.mutationMs.toFixed(1)} ms, sync ${trial.syncMs.toFixed(1)} ms (${trial.runs.length} runs), sent→served ${trial.servedMs.toFixed(1)} ms; applying run ${applying ? `${applying.totalMs.toFixed(1)} ms: ${applying.caddy.map((c) => `${c.name} ${c.ms.toFixed(1)}`).join(', ')}` : 'not seen'}`,
      );
    }

    report({
      oneDomainRuns,
      manyDomainRuns,
      firstTrials,
      laterTrials,
      fullLoads,
      bulk,
      bulkCreatedMs,
      bulkAppliedMs,
      lastDomain,
      firstDomain,
      tables,
      loadStart,
    });
  } finally {
    await prober?.close().catch(() => undefined);
    await manager?.stop().catch((err: unknown) => console.error('proxy: manager.stop failed', err));
    await caddy?.stop().catch((err: unknown) => console.error('proxy: Caddy stop failed', err));
    caddyPid = () => undefined;
    revocations?.stop();
    if (httpServer) {
      const server = httpServer;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await stopHelper(backend);
    stopChildren();
    // the namespace's deletion removes the veth pair too; removing our end first leaves nothing behind even if that fails
    await run('ip', ['link', 'del', rootIf]).catch(() => undefined);
    await lab.cleanup();
    await store?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function report(r: {
  oneDomainRuns: LoadRun[];
  manyDomainRuns: LoadRun[];
  firstTrials: DomainTrial[];
  laterTrials: DomainTrial[];
  fullLoads: FullLoad[];
  bulk: number;
  bulkCreatedMs: number;
  bulkAppliedMs: number;
  lastDomain: string;
  firstDomain: string;
  tables: number;
  loadStart: string;
}): void {
  const n = DOMAINS.toLocaleString('en-US');
  const nth = ordinal(DOMAINS + 1);
  const isDirect = (x: LoadRun) => x.variant === 'direct';
  const rate = (runs: LoadRun[], variant: string) => median(runs.filter((x) => x.variant === variant).map((x) => x.perSecond));
  const directRate = (runs: LoadRun[]) => median(runs.filter(isDirect).map((x) => x.perSecond));
  /** Caddy's CPU time per request, in µs: independent of how much of the machine others take. */
  const caddyUs = (runs: LoadRun[], variant: string) => median(runs.filter((x) => x.variant === variant).map((x) => (x.cores.caddy / x.perSecond) * 1e6));
  const one = 'through Caddy, 1 domain';
  const last = `through Caddy, ${DOMAINS} domains, last route`;
  const first = `through Caddy, ${DOMAINS} domains, first route`;

  console.log(
    `\nReverse proxy benchmark: Caddy ${caddyVersion()} driven by Gatehouse's ProxyManager (PGlite), tlsMode NONE, ${ACCESS_LOG ? 'access log into the controller (as `gatehouse serve` runs it)' : 'WITHOUT the access log (BENCH_PROXY_ACCESS_LOG=0)'}.`,
  );
  console.log(
    `Backend: the tests' node HTTP server (proxy-backend.mjs) in a network namespace at ${BACKEND_ADDRESS}:${BACKEND_PORT}, over a veth; Caddy on 127.0.0.1.`,
  );
  console.log(
    `Load: bench/proxy-client.ts in its own node process, ${CONCURRENCY} keep-alive connections (node:http Agent) sending GET / back to back, ${DURATION_MS / 1000} s counted`,
  );
  console.log(
    `after ${WARMUP_MS / 1000} s warm-up, median of ${ROUNDS} rounds (order reversed every other round). ${cpuCount()} cores shared by load generator, backend, Caddy, controller`,
  );
  console.log("and anything else running; CPU from /proc over the counted window, in cores ('others': the rest of the machine's busy time).");
  console.log(
    '\nrequests per second                      req/s (range)        p50 ms   p99 ms  vs direct | CPU cores: load backend  caddy  ctrl others | caddy µs/req',
  );
  const rows = (runs: LoadRun[], directLabel: string) => {
    const direct = directRate(runs);
    for (const variant of [...new Set(runs.map((x) => x.variant))].sort((a, b) => Number(b === 'direct') - Number(a === 'direct'))) {
      const xs = runs.filter((x) => x.variant === variant);
      const m = (f: (x: LoadRun) => number) => median(xs.map(f));
      const cell = (f: (x: LoadRun) => number, width: number) => m(f).toFixed(2).padStart(width);
      const range = `${Math.min(...xs.map((x) => x.perSecond)).toFixed(0)}-${Math.max(...xs.map((x) => x.perSecond)).toFixed(0)}`;
      const failures = xs.reduce((t, x) => t + Object.values(x.failures).reduce((a, b) => a + b, 0), 0);
      const cores = [
        cell((x) => x.cores.load, 16),
        cell((x) => x.cores.backend, 7),
        cell((x) => x.cores.caddy, 6),
        cell((x) => x.cores.controller, 5),
        cell((x) => Math.max(0, x.cores.machine - x.cores.load - x.cores.backend - x.cores.caddy - x.cores.controller), 6),
      ];
      const perRequest = variant === 'direct' ? '' : caddyUs(runs, variant).toFixed(0).padStart(13);
      console.log(
        `${(variant === 'direct' ? directLabel : variant).padEnd(40)}${rate(runs, variant).toFixed(0).padStart(6)} (${range})`.padEnd(66) +
          `${cell((x) => x.p50Ms, 6)} ${cell((x) => x.p99Ms, 8)} ${ratio(rate(runs, variant), direct).padStart(10)} |${cores.join(' ')} |${perRequest}` +
          (failures > 0 ? `   ${failures} failed requests` : ''),
      );
    }
  };
  rows(r.oneDomainRuns, 'direct');
  rows(r.manyDomainRuns, `direct (again, ${n} domains in Caddy)`);
  console.log(
    `  ${r.tables} host tables (routes matching a set of hosts, each with a map host → upstream): ${r.lastDomain} is the last mapping of the last table, ${r.firstDomain} the first of the first.`,
  );

  console.log(
    `\none new domain (tlsMode NONE) through the GraphQL API, median of ${TRIALS} trials (a prober polls Caddy every 2 ms, new connection each time):`,
  );
  console.log('domain                                 mutation ms    sync ms   sent→served ms  (range)');
  const trialRow = (label: string, trials: DomainTrial[]) => {
    const served = trials.map((t) => t.servedMs);
    const m = (f: (t: DomainTrial) => number, width: number) => median(trials.map(f)).toFixed(1).padStart(width);
    console.log(
      `${label.padEnd(38)} ${m((t) => t.mutationMs, 11)} ${m((t) => t.syncMs, 10)} ${m((t) => t.servedMs, 16)}  (${Math.min(...served).toFixed(1)}-${Math.max(...served).toFixed(1)})`,
    );
  };
  trialRow('1st (0 present; deleted after each)', r.firstTrials);
  trialRow(`${nth}…${ordinal(DOMAINS + TRIALS)} (${n}… present)`, r.laterTrials);
  const ratioOf = (f: (t: DomainTrial) => number) => ratio(median(r.laterTrials.map(f)), median(r.firstTrials.map(f)));
  console.log(
    `${`${nth} / 1st`.padEnd(38)} ${ratioOf((t) => t.mutationMs).padStart(11)} ${ratioOf((t) => t.syncMs).padStart(10)} ${ratioOf((t) => t.servedMs).padStart(16)}`,
  );
  console.log(
    "  mutation: sent → response; sync: response → manager.sync() resolved (the mutation's webProxyChanged event starts a sync run, the call adds one more);",
  );
  console.log('  sent→served: mutation sent → first reply of the backend through Caddy for the new domain.');
  console.log('where the time goes in the sync run that applied the new domain (median ms):');
  const breakdown = (label: string, trials: DomainTrial[]) => {
    const applying = trials.map((t) => t.runs.find((x) => x.caddy.some((c) => /^(POST|PUT|PATCH) /.test(c.name)))).filter((x): x is SyncRun => x !== undefined);
    if (applying.length === 0) return console.log(`  ${label}: no applying run seen`);
    const m = (f: (x: SyncRun) => number) => median(applying.map(f)).toFixed(1);
    const names = [...new Set(applying.flatMap((x) => x.caddy.map((c) => c.name)))];
    const requests = names.map(
      (name) => `${name} ${median(applying.map((x) => x.caddy.filter((c) => c.name === name).reduce((t, c) => t + c.ms, 0))).toFixed(1)}`,
    );
    console.log(
      `  ${label}: started ${m((x) => x.startMs)} after the mutation was sent (response at ${median(trials.map((t) => t.mutationMs)).toFixed(1)}), took ${m((x) => x.totalMs)} = loadSites (DB read, sites) ${m((x) => x.loadSitesMs)}`,
    );
    console.log(
      `    + applyChanges ${m((x) => x.applyMs)} (Caddy admin requests ${m((x) => x.caddyMs)}, diff and the rest ${m((x) => x.applyMs - x.caddyMs)}) + recordStatuses ${m((x) => x.recordMs)}; ${median(trials.map((t) => t.runs.length))} sync runs per trial`,
    );
    console.log(`    Caddy requests: ${requests.join(', ')}`);
  };
  breakdown('1st', r.firstTrials);
  breakdown(nth, r.laterTrials);
  console.log(
    "  (Caddy 2.6 re-provisions its whole config on every admin API change: the request adding a domain (PATCH of its host table's route) includes reloading all of it)",
  );

  const f = r.fullLoads;
  const fm = (g: (x: FullLoad) => number) => median(f.map(g)).toFixed(0);
  console.log(`\nfull load of ${n} proxies into a fresh Caddy (a new ProxyManager's start()), median of ${f.length}:`);
  console.log(
    `  start() ${fm((x) => x.startMs)} ms = loadSites ${fm((x) => x.run.loadSitesMs)} + Caddy POST /load of the whole config ${fm((x) => x.run.caddyMs)} + recordStatuses ${fm((x) => x.run.recordMs)} (+ rest); last domain served after ${fm((x) => x.servedMs)} ms`,
  );
  console.log(
    `  (before that: ${r.bulk.toLocaleString('en-US')} proxies created one at a time through WebProxyService.create with the manager running took ${(r.bulkCreatedMs / 1000).toFixed(2)} s; all APPLIED after ${(r.bulkAppliedMs / 1000).toFixed(2)} s)`,
  );

  const served = (ts: DomainTrial[]) => median(ts.map((t) => t.servedMs));
  const line = (label: string, text: string) => console.log(`  ${`${label}:`.padEnd(33)}${text}`);
  console.log('\nsummary');
  line(
    'req/s through Caddy / direct',
    `${ratio(rate(r.oneDomainRuns, one), directRate(r.oneDomainRuns))} with 1 domain (${rate(r.oneDomainRuns, one).toFixed(0)} vs ${directRate(r.oneDomainRuns).toFixed(0)}); with ${n}: ${ratio(rate(r.manyDomainRuns, last), directRate(r.manyDomainRuns))} through the last route, ${ratio(rate(r.manyDomainRuns, first), directRate(r.manyDomainRuns))} through the first`,
  );
  line(
    'Caddy CPU per request',
    `${caddyUs(r.oneDomainRuns, one).toFixed(0)} µs with 1 domain; with ${n}: ${caddyUs(r.manyDomainRuns, last).toFixed(0)} µs through the last route, ${caddyUs(r.manyDomainRuns, first).toFixed(0)} µs through the first`,
  );
  line(
    'new domain sent→served',
    `${served(r.laterTrials).toFixed(1)} ms for the ${nth} vs ${served(r.firstTrials).toFixed(1)} ms for the 1st (${ratio(served(r.laterTrials), served(r.firstTrials))})`,
  );
  line(`full load of ${n} proxies`, `${fm((x) => x.startMs)} ms (start()), last domain served after ${fm((x) => x.servedMs)} ms`);

  // issue 20's three rows, each against its baseline from this run
  const verdict = (ok: boolean) => (ok ? 'MET' : 'NOT MET');
  const cpuLast = caddyUs(r.manyDomainRuns, last);
  const cpuOne = caddyUs(r.oneDomainRuns, one);
  const cpuFirst = caddyUs(r.manyDomainRuns, first);
  const laterServed = served(r.laterTrials);
  console.log(`
issue 20 (load average 1/5/15 min: ${r.loadStart} at the start, ${loadAverage()} now; ${cpuCount()} cores)`);
  console.log(
    `  Caddy CPU per request, the ${ordinal(DOMAINS)} domain (found last) vs the 1st (1 domain present): ${cpuLast.toFixed(0)} µs vs ${cpuOne.toFixed(0)} µs = ${ratio(cpuLast, cpuOne)}` +
      ` (found first among ${n}: ${cpuFirst.toFixed(0)} µs, ${ratio(cpuFirst, cpuOne)}); target ≤ 1.1x: ${verdict(cpuLast / cpuOne <= 1.1)}`,
  );
  console.log(
    `  adding the ${nth} domain, mutation sent → served: median ${laterServed.toFixed(1)} ms (the 1st, 0 present: ${served(r.firstTrials).toFixed(1)} ms, ${ratio(laterServed, served(r.firstTrials))}); target < 60 ms at ${n}: ${verdict(laterServed < 60 && DOMAINS >= 10_000)}`,
  );
  console.log(
    `  creating ${r.bulk.toLocaleString('en-US')} proxies one call at a time until all APPLIED: ${(r.bulkAppliedMs / 1000).toFixed(2)} s (the calls alone: ${(r.bulkCreatedMs / 1000).toFixed(2)} s, ${ratio(r.bulkAppliedMs, r.bulkCreatedMs)}); target < 5 s: ${verdict(r.bulkAppliedMs < 5000 && r.bulk >= 1000)}`,
  );
}

/** The load average (1, 5, 15 min) as printed. */
function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

/**
 * From Caddy's config: the domain Caddy finds last (the last host table route, the last mapping
 * of its map: the most routes passed and the longest scan) and the one it finds first.
 */
async function routePositions(client: ProxyManager['client']): Promise<{ lastDomain: string; firstDomain: string; tables: number }> {
  type Table = { '@id': string; handle: { handler: string; mappings?: { input: string }[] }[] };
  const routes = (await client.getConfig<Table[]>(ROUTES_PATH)).value.filter((r) => r['@id'].startsWith('gh-hosts-'));
  const inputs = (r: Table) => r.handle.find((h) => h.handler === 'map')!.mappings!.map((m) => m.input);
  return { firstDomain: inputs(routes[0]!)[0]!, lastDomain: inputs(routes.at(-1)!).at(-1)!, tables: routes.length };
}

function caddyVersion(): string {
  try {
    return execFileSync('caddy', ['version'], { encoding: 'utf8' }).trim().split(/\s/)[0]!;
  } catch {
    return '(version unknown)';
  }
}

function cpuCount(): number {
  return readFileSync('/proc/cpuinfo', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('processor')).length;
}

await main();
