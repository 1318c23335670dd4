/**
 * Traffic totals through failures, on real traffic as root: a controller process and the agent
 * process (`gatehouse agent --plugin linux`, reporting every 500 ms), and a client namespace
 * sending a known number of bytes through a port forward to a sink in the instance namespace that
 * counts what it receives. While bytes flow, the agent is killed (SIGKILL) and started again, the
 * controller is killed and started again on the same port and data, and the instance's veth is
 * deleted and re-created by the agent's drift repair (a new ifindex: a new counter epoch). Each
 * time the instance's period total grows by the bytes received within 1 % (headers), never less
 * (nothing lost) and never by a phantom or a double count.
 */
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, startAgent, startController, until, type Proc } from './support.js';
import { createTrafficObjects, startByteSink } from './traffic-support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const MB = 1024 * 1024;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('traffic totals through failures', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-traffic-robust-'));
  let port: number;
  let controller: { proc: Proc; url: string; bootstrapSecret: string | null };
  let admin: string;
  let agentToken: string;
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  let instanceId: string;
  let agent: Proc | undefined;
  let sink: ChildProcess | undefined;
  let sinkOut = '';
  const servers: LabServer[] = [];
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const rxTotal = async () =>
    (await api(`query($id: ID!) { instance(id: $id) { traffic { period { rxBytes } } } }`, { id: instanceId })).instance.traffic.period.rxBytes as number;
  const pluginConfig = () => JSON.stringify({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` });
  const startTheAgent = () =>
    startAgent(
      ['--controller', controller.url, '--plugin', 'linux', '--plugin-config', pluginConfig(), '--drift-interval', '300', '--stats-interval', '500'],
      agentToken,
    );

  /** Sends `bytes` through the forward at about 10 MB/s; resolves with what the sink received. */
  async function transfer(bytes: number, during?: () => Promise<void>): Promise<number> {
    const seen = sinkOut.length;
    const received = new Promise<number>((resolve) => {
      const look = () => {
        const m = /received (\d+)/.exec(sinkOut.slice(seen));
        if (m) resolve(Number(m[1]));
        else setTimeout(look, 50);
      };
      look();
    });
    const send = `const s=require('net').connect({host:'198.51.100.1',port:18190},async()=>{const b=Buffer.alloc(65536,120);let left=${bytes};while(left>0){const n=Math.min(left,b.length);left-=n;if(!s.write(n===b.length?b:b.subarray(0,n)))await new Promise(r=>s.once('drain',r));if(left%(1<<20)===0)await new Promise(r=>setTimeout(r,100))}s.end()});s.on('data',()=>{});s.on('close',()=>console.log('sent'))`;
    const sending = client.exec(process.execPath, ['-e', send], { timeoutMs: 120_000 });
    await during?.();
    expect((await sending).trim()).toBe('sent');
    return received;
  }

  /**
   * Waits until the agent has said `connected to the controller` more often than `before` times:
   * after a restart of either side, reports resume only then (the agent's backoff after a refused
   * connection is up to 30 s), and a total that stops growing before it says nothing.
   */
  async function reconnected(before: number, what: string): Promise<void> {
    const started = Date.now();
    const count = () => agent!.output().split('connected to the controller').length - 1;
    expect(await until(async () => count() > before, 60_000, 100)).toBe(true);
    console.log(`[traffic robustness] ${what}: the agent reports again ${Date.now() - started} ms after the transfer`);
  }

  /** Waits until the total stops growing (the last bytes reported), returns it. */
  async function settled(): Promise<number> {
    let last = -1;
    for (;;) {
      await new Promise((r) => setTimeout(r, 2000));
      const now = await rxTotal();
      if (now === last) return now;
      last = now;
    }
  }

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    sink = startByteSink(vm);
    sink.stdout!.on('data', (d: Buffer) => (sinkOut += d.toString()));
    servers.push(tcpServer(vm, 8080, 'hello'));
    port = await freePort();
    controller = await startController(dataDir, { port });
    admin = controller.bootstrapSecret!;
    ({ instanceId, agentToken } = await createTrafficObjects(api, {
      bridge: `${lab.prefix}br`,
      vm,
      pool: { name: 'rb', cidr: '10.76.0.0/24', gateway: '10.76.0.1' },
      hostName: 'rb-host',
      forwards: [
        ['18190', '9000'],
        ['18180', '8080'],
      ],
    }));
    agent = startTheAgent();
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18180), 30_000)).toBe('got:hello');
    // counting runs: the NIC has a live rate once two readings were taken
    await until(async () => (await api(`query($id: ID!) { instance(id: $id) { traffic { live { at } } } }`, { id: instanceId })).instance.traffic.live);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    if (sink?.exitCode === null) sink.kill('SIGTERM');
    for (const s of servers) s.stop();
    await controller?.proc.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  const expectWithin1Percent = (counted: number, sent: number, what: string) => {
    console.log(`[traffic robustness] ${what}: received ${sent} bytes, counted ${counted} (+${(((counted - sent) / sent) * 100).toFixed(3)} %)`);
    expect(counted).toBeGreaterThanOrEqual(sent);
    expect(counted).toBeLessThanOrEqual(sent * 1.01);
  };

  it('counts exactly across an agent killed (SIGKILL) and restarted mid-transfer', async () => {
    const before = await settled();
    const received = await transfer(40 * MB, async () => {
      await new Promise((r) => setTimeout(r, 1500));
      expect(await agent!.stop('SIGKILL')).toBe(null);
      await new Promise((r) => setTimeout(r, 1000));
      agent = startTheAgent();
    });
    expect(received).toBe(40 * MB);
    await reconnected(0, 'agent killed mid-transfer');
    expectWithin1Percent((await settled()) - before, received, 'agent killed mid-transfer');
  }, 120_000);

  it('counts exactly across a controller killed and restarted mid-transfer', async () => {
    const before = await settled();
    const connects = agent!.output().split('connected to the controller').length - 1;
    const received = await transfer(40 * MB, async () => {
      await new Promise((r) => setTimeout(r, 1500));
      await controller.proc.stop('SIGKILL');
      await new Promise((r) => setTimeout(r, 500));
      controller = await startController(dataDir, { port, fresh: false });
    });
    expect(received).toBe(40 * MB);
    await reconnected(connects, 'controller killed mid-transfer');
    expectWithin1Percent((await settled()) - before, received, 'controller killed mid-transfer');
  }, 120_000);

  it('counts from zero on a re-created veth (a new ifindex), with no phantom traffic', async () => {
    const before = await settled();
    const first = await transfer(10 * MB);
    await settled();
    // the instance's NIC (a veth pair): deleted from inside the instance, the agent's drift repair makes a new pair
    const links = async () =>
      (JSON.parse(await vm.exec('ip', ['-j', 'link', 'show'])) as { ifname: string; ifindex: number }[]).filter((l) => l.ifname !== 'lo');
    const [nic] = await links();
    expect(nic).toBeTruthy();
    await vm.exec('ip', ['link', 'del', nic!.ifname]);
    const recreated = await until(async () => (await links()).find((l) => l.ifname === nic!.ifname), 30_000);
    console.log(`[traffic robustness] ${nic!.ifname} re-created: ifindex ${nic!.ifindex} -> ${recreated!.ifindex}`);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18180), 30_000)).toBe('got:hello');
    await settled();
    const second = await transfer(10 * MB);
    expectWithin1Percent((await settled()) - before, first + second, 'veth re-created between two transfers');
  }, 120_000);
});
