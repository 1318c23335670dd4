/**
 * Real traffic, as root: a controller process, the host agent with the Linux plugin reporting
 * counters every 500 ms, and a client namespace that sends a known number of bytes through a port
 * forward to an instance namespace. The instance's billing-period total (rx: into the instance)
 * and its 1-minute buckets must match the bytes the instance received within 1 %, headers
 * included; the live rate shows the transfer while it runs.
 */
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { LinuxDriver } from '@gatehouse/plugin-linux';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { gql, startController, until, type Proc } from './support.js';
import { createTrafficObjects, startByteSink } from './traffic-support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const BYTES = 50 * 1024 * 1024;

describe.skipIf(!available && !REQUIRE_SYSTEM)('traffic counted end to end', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-traffic-'));
  let controller: { proc: Proc; url: string; bootstrapSecret: string | null };
  let admin: string;
  let client: LabNamespace;
  let vm: LabNamespace;
  let instanceId: string;
  let forwardId: string;
  let agent: HostAgent | undefined;
  let sink: ChildProcess | undefined;
  const servers: LabServer[] = [];
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const period = async () =>
    (await api(`query($id: ID!) { instance(id: $id) { traffic { period { rxBytes txBytes } } } }`, { id: instanceId })).instance.traffic.period as {
      rxBytes: number;
      txBytes: number;
    };

  beforeAll(async () => {
    const host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello'));
    // a sink in the instance: counts what it receives, prints the count when the sender closes
    sink = startByteSink(vm);
    controller = await startController(dataDir);
    admin = controller.bootstrapSecret!;
    const created = await createTrafficObjects(api, {
      bridge: `${lab.prefix}br`,
      vm,
      pool: { name: 'tr', cidr: '10.79.0.0/24', gateway: '10.79.0.1' },
      hostName: 'tr-host',
      forwards: [
        ['18090-18091', '9000-9001'],
        ['18080', '8080'],
      ],
    });
    instanceId = created.instanceId;
    forwardId = created.forwardIds[0]!;
    agent = new HostAgent({
      controllerUrl: controller.url,
      token: created.agentToken,
      driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
      logger: { info() {}, warn() {}, error() {} },
      statsIntervalMs: 500,
    });
    await agent.start();
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    for (const s of servers) s.stop();
    if (sink?.exitCode === null) sink.kill('SIGTERM');
    await controller?.proc.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('counts the bytes sent through a forward into the instance within 1 %, in the period total and the 1-minute buckets', async () => {
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 20_000)).toBe('got:hello');
    // the agent reports: a live rate exists once two readings of the NIC were taken
    await until(async () => (await api(`query($id: ID!) { instance(id: $id) { traffic { live { at } } } }`, { id: instanceId })).instance.traffic.live);
    await new Promise((r) => setTimeout(r, 1200));
    const before = await period();
    let peakBps = 0;
    const watching = setInterval(() => {
      void api(`query($id: ID!) { instance(id: $id) { traffic { live { rxBps } } } }`, { id: instanceId })
        .then((d) => (peakBps = Math.max(peakBps, d.instance.traffic.live?.rxBps ?? 0)))
        .catch(() => undefined);
    }, 200);
    const received = new Promise<number>((resolve) => {
      let out = '';
      sink!.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /received (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
    });
    // the sender writes BYTES in 64 KiB chunks, at most ~25 MB/s so the transfer spans several reports
    const send = `const s=require('net').connect({host:'198.51.100.1',port:18090},async()=>{const b=Buffer.alloc(65536,120);let left=${BYTES};while(left>0){const n=Math.min(left,b.length);left-=n;if(!s.write(n===b.length?b:b.subarray(0,n)))await new Promise(r=>s.once('drain',r));if(left%(1<<20)===0)await new Promise(r=>setTimeout(r,40))}s.end()});s.on('data',()=>{});s.on('close',()=>console.log('sent'))`;
    expect((await client.exec(process.execPath, ['-e', send], { timeoutMs: 60_000 })).trim()).toBe('sent');
    expect(await received).toBe(BYTES);
    await new Promise((r) => setTimeout(r, 2500)); // two more reports carry the last bytes
    clearInterval(watching);
    const after = await period();
    const rx = after.rxBytes - before.rxBytes;
    // headers (Ethernet, IP, TCP) ride on top of the payload; segments are large on veth
    expect(rx).toBeGreaterThanOrEqual(BYTES);
    expect(rx).toBeLessThanOrEqual(BYTES * 1.01);
    // the replies (ACKs) out of the instance are a small fraction
    expect(after.txBytes - before.txBytes).toBeLessThan(BYTES * 0.05);
    const points = (await api(`query($id: ID!) { instance(id: $id) { traffic { history(range: LAST_HOUR) { rxBytes } } } }`, { id: instanceId })).instance
      .traffic.history as { rxBytes: number }[];
    expect(points.reduce((s, p) => s + p.rxBytes, 0)).toBe(after.rxBytes);
    // ~25 MB/s paced: the live rate saw the transfer
    expect(peakBps).toBeGreaterThan(50e6);
    const forward = (await api(`query($id: ID!) { portForward(id: $id) { traffic { period { rxBytes } } } }`, { id: forwardId })).portForward.traffic.period;
    expect(forward.rxBytes).toBeGreaterThan(0);
    console.log(
      `traffic e2e: sent ${BYTES} bytes, counted rx ${rx} (+${(((rx - BYTES) / BYTES) * 100).toFixed(3)} %), peak live ${Math.round(peakBps / 1e6)} Mbit/s`,
    );
  }, 120_000);
});
