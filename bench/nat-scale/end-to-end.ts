/**
 * The whole path of one new forward with many installed: `createPortForward` over GraphQL on a
 * real controller (PGlite, or PostgreSQL with BENCH_STORE=postgres), the host agent in this
 * process with the Linux plugin on a lab host namespace, and a prober in a client namespace that
 * connects to the new public port every millisecond. Measured: from the mutation's HTTP response
 * to the prober's first answered connection, with BENCH_E2E_FORWARDS (default 60,000) forwards
 * present; also when the agent received the revision and how long its apply took.
 *
 *   npx tsx bench/nat-scale/end-to-end.ts      (as root; BENCH_E2E_SAMPLES=5)
 *
 * Exported for bench/nat-scale.ts; run alone it prints its own figures.
 */
import 'reflect-metadata';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { HostAgent } from '../../agents/host-agent/src/index.js';
import { startController } from '../../core/server/src/index.js';
import { LinuxDriver } from '../../plugins/linux/src/index.js';
import { NetnsLab, tcpServer } from '../../core/sdk/src/testkit/index.js';
import { benchGql, createBenchStore, dropBenchDatabase } from '../bench-store.js';

export interface EndToEndResult {
  forwards: number;
  store: string;
  /** mutation response → first answered connection, ms, per sample */
  latencyMs: number[];
  /** mutation sent → first answered connection, ms: includes the controller's work before it answers */
  fromSentMs: number[];
  /** mutation response → the agent has the new revision, ms */
  receivedMs: number[];
  /** the agent's apply of that revision, ms */
  applyMs: number[];
}

const quiet = { info() {}, warn() {}, error: (...a: unknown[]) => console.error(...a), debug() {} };

export async function measureEndToEnd(
  options: { forwards?: number; samples?: number; store?: 'pglite' | 'postgres'; log?: (line: string) => void } = {},
): Promise<EndToEndResult> {
  const forwards = options.forwards ?? 60_000;
  const samples = options.samples ?? 5;
  const storeKind = options.store ?? 'pglite';
  const log = options.log ?? ((line: string) => console.log(line));
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-e2e-'));
  let controller: Awaited<ReturnType<typeof startController>> | undefined;
  let agent: HostAgent | undefined;
  let prober: ReturnType<typeof spawn> | undefined;
  const servers: { stop(): void }[] = [];
  let dbName: string | undefined;
  try {
    const host = await lab.namespace('host');
    const client = await lab.namespace('cli');
    const vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'x'));
    const created = await createBenchStore(storeKind, 'gatehouse_bench_e2e', dataDir);
    dbName = created.database;
    const store = created.store;
    controller = await startController({ store, port: 0, host: '127.0.0.1', logger: quiet as never });
    const url = controller.url;
    const secret = controller.bootstrapSecret!;
    const api = <T = any>(q: string, v?: Record<string, unknown>) => benchGql<T>(url, secret, q, v);
    await api(
      `mutation { createIpPool(input: { name: "bench", kind: PRIVATE, network: "${lab.prefix}br", cidr: "10.77.0.0/24", gateway: "10.77.0.1" }) { __typename ... on Error { message } } }`,
    );
    const hostId = (
      await api(
        `mutation { createHost(input: { name: "bench", backend: LINUX, publicAddresses: ["198.51.100.1"], portRangeStart: 1, portRangeEnd: 65535 }) { ... on CreateHostPayload { host { id } } ... on Error { message } } }`,
      )
    ).createHost.host.id as string;
    const instance = (
      await api(
        `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id } } ... on Error { message } } }`,
        {
          hostId,
          name: vm.name,
        },
      )
    ).createInstance.instance.id as string;
    const token = (
      await api(
        `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ... on Error { message } } }`,
        { hostId },
      )
    ).createApiToken.created.secret as string;
    // the installed forwards: TCP host ports 2000.. → vm1:8080, imported 30,000 at a time
    const started = performance.now();
    for (let first = 0; first < forwards; first += 30_000) {
      const rows = Array.from({ length: Math.min(30_000, forwards - first) }, (_, n) => `tcp,${2000 + first + n},10.77.0.2,8080,`);
      await api(
        `mutation ($hostId: ID!, $csv: String!) { importPortForwards(input: { hostId: $hostId, csv: $csv }) { __typename ... on Error { message } } }`,
        {
          hostId,
          csv: `protocol,host_port,vm_ip,vm_port,note\n${rows.join('\n')}\n`,
        },
      );
    }
    log(`  end to end (${storeKind}): ${forwards} forwards imported in ${Math.round(performance.now() - started)} ms`);

    const applied: { revision: number; at: number; applyMs?: number }[] = [];
    agent = new HostAgent({
      controllerUrl: url,
      token,
      hostId,
      driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
      logger: {
        info: (m, f) => {
          if (m.startsWith('applying revision')) applied.push({ revision: Number(m.split(' ')[2]), at: performance.now() });
          if (m === 'applied') applied.at(-1)!.applyMs = (f as { ms: number }).ms;
        },
        warn: () => undefined,
        error: (m, f) => console.error(m, f),
      },
      driftIntervalMs: 60_000,
    });
    await agent.start();
    const converge = performance.now();
    await new Promise<void>((resolve) => agent!.once('applied', () => resolve()));
    log(`  end to end: first apply of ${forwards} forwards by the agent ${Math.round(performance.now() - converge)} ms`);

    prober = spawn('ip', ['netns', 'exec', client.name, process.execPath, '--import', 'tsx', fileURLToPath(new URL('./tcp-probe.ts', import.meta.url))], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: prober.stdout! });
    const waiting = new Map<string, (line: string) => void>();
    lines.on('line', (line) => waiting.get(line.split(' ')[1]!)?.(line));
    const result: EndToEndResult = { forwards, store: storeKind, latencyMs: [], fromSentMs: [], receivedMs: [], applyMs: [] };
    for (let s = 0; s < samples; s++) {
      const port = 62_000 + s;
      const ready = new Promise<void>((resolve) => waiting.set(`${s}`, () => resolve()));
      prober.stdin!.write(`probe ${s} 198.51.100.1 ${port} 20000\n`);
      await ready;
      const done = new Promise<string>((resolve) => waiting.set(`${s}`, resolve));
      const sent = process.hrtime.bigint();
      await api(
        `mutation ($id: ID!, $port: String!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: $port, targetPort: "8080" }) { __typename ... on Error { message } } }`,
        {
          id: instance,
          port: String(port),
        },
      );
      const returned = process.hrtime.bigint();
      const returnedAt = performance.now();
      const line = await done;
      if (!line.startsWith('ok ')) throw new Error(`forward ${port} did not answer within 20 s`);
      result.latencyMs.push(Number(BigInt(line.split(' ')[2]!) - returned) / 1e6);
      result.fromSentMs.push(Number(BigInt(line.split(' ')[2]!) - sent) / 1e6);
      const last = applied.at(-1)!;
      // the forward answers before the apply returns (the plugin finishes after the nft transaction)
      for (let waited = 0; last.applyMs === undefined && waited < 10_000; waited += 5) await new Promise((r) => setTimeout(r, 5));
      result.receivedMs.push(last.at - returnedAt);
      result.applyMs.push(last.applyMs ?? NaN);
      await new Promise((r) => setTimeout(r, 300));
    }
    return result;
  } finally {
    prober?.stdin?.end();
    await agent?.stop();
    await controller?.close();
    for (const s of servers) s.stop();
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    if (dbName) await dropBenchDatabase(dbName);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const store = process.env.BENCH_STORE === 'postgres' ? 'postgres' : 'pglite';
  const r = await measureEndToEnd({ forwards: Number(process.env.BENCH_E2E_FORWARDS ?? 60_000), samples: Number(process.env.BENCH_E2E_SAMPLES ?? 5), store });
  const f = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' / ');
  console.log(
    `createPortForward → first connection with ${r.forwards} forwards (${r.store}): median ${median(r.latencyMs).toFixed(1)} ms  [${f(r.latencyMs)}]`,
  );
  console.log(`  from the mutation sent: median ${median(r.fromSentMs).toFixed(1)} ms  [${f(r.fromSentMs)}]`);
  console.log(`  agent received the revision after: ${f(r.receivedMs)} ms; its apply took: ${f(r.applyMs)} ms`);
}
