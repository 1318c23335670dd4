/**
 * The LXD plugin when things go wrong, against a real LXD in a lab namespace (see lxd-lab.ts):
 * LXD stopped before an apply and cut off in the middle of one (objects FAILED with
 * HOST_UNREACHABLE, then converging when it is back), an instance deleted behind Gatehouse's back,
 * and NIC hot-plug with static addressing on a second LXD network (and its removal).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffObservation, expectedObservation, run, type DesiredState, type DriverContext, type NetworkDriver } from '@gatehouse/sdk';
import { eventually, tcpOutcome, type LabServer } from '@gatehouse/sdk/testkit';
import plugin, { OWNER_KEY, nicDeviceName, type LxdInstance } from '../src/index.js';
import { LAB_PUBLIC_V4, LAB_V4_PREFIX, LxdLab, lxdAvailable } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await lxdAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };

type Instance = DesiredState['instances'][number];

describe.skipIf(!available && !REQUIRE_SYSTEM)('lxd: faults', () => {
  let lxd: LxdLab;
  let driver: NetworkDriver;
  let revision = 0;
  const servers: LabServer[] = [];
  const ctx = (): DriverContext => ({ logger: silent, signal: new AbortController().signal, host: { id: 'h1', name: 'h1', publicAddresses: [LAB_PUBLIC_V4] } });
  const ids = { a: '00000000-0000-4000-8000-0000000000a1', b: '00000000-0000-4000-8000-0000000000b1' };
  const mac = { a: '02:47:48:00:01:0a', b: '02:47:48:00:01:0b' };
  const address = { a: `${LAB_V4_PREFIX}20`, b: `${LAB_V4_PREFIX}21` };
  const instance = (key: 'a' | 'b', extra: Partial<Instance> = {}): Instance => ({
    id: ids[key],
    name: `fault-${key}`,
    externalId: `fault-${key}`,
    nics: [
      {
        id: `${ids[key].slice(0, -2)}c${key === 'a' ? 1 : 2}`,
        name: 'eth0',
        mac: mac[key],
        network: lxd.network,
        addresses: [{ address: address[key], prefixLength: 24, delegated: false, gateway: `${LAB_V4_PREFIX}1`, dns: [] }],
      },
    ],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [],
    ...extra,
  });
  const forward = (id: string, hostPort: number, target: string, targetPort: number) => ({
    id: `00000000-0000-4000-8000-0000000${id}`,
    protocol: 'tcp' as const,
    hostAddress: null,
    hostPorts: { start: hostPort, end: hostPort },
    targetAddress: target,
    targetPorts: { start: targetPort, end: targetPort },
    sourceCidrs: [],
  });
  const state = (instances: Instance[]): DesiredState => ({
    apiVersion: 1,
    hostId: 'h1',
    hostName: 'h1',
    revision: ++revision,
    publicAddresses: [LAB_PUBLIC_V4],
    instances,
  });
  const tcp = (port: number) => tcpOutcome(lxd.outside, LAB_PUBLIC_V4, port);
  const statuses = (objects: { objectType: string; status: string; error?: { code: string } }[]) =>
    objects.map((o) => `${o.objectType}:${o.status}${o.error ? `:${o.error.code}` : ''}`).sort();

  // every driver the tests make, closed (its nft process ended) before the lab goes
  const opened: { close?(): Promise<void> }[] = [];
  const open = async (config: { socket: string; hostNetns: string }) => {
    const made = await plugin.createDriver(config, ctx());
    opened.push(made);
    return made;
  };

  beforeAll(async () => {
    lxd = await LxdLab.start();
    driver = await open({ socket: lxd.client.socketPath, hostNetns: lxd.host.name });
    for (const key of ['a', 'b'] as const) {
      const inst = await lxd.createInstance(`fault-${key}`, [
        { name: 'eth0', mac: mac[key], network: lxd.network, address: address[key], prefixLength: 24, gateway: `${LAB_V4_PREFIX}1` },
      ]);
      servers.push(await inst.tcpServer(8080, `tcp-${key}-8080`), await inst.tcpServer(8081, `tcp-${key}-8081`));
    }
  }, 120_000);

  afterAll(async () => {
    for (const s of servers) s.stop();
    try {
      if (driver) await driver.apply(ctx(), { desired: state([]) });
    } finally {
      for (const made of opened.splice(0)) await made.close?.();
      await lxd?.cleanup();
    }
  }, 120_000);

  it('discovers the instances with their NICs, MACs, addresses and host-side veths', async () => {
    const { instances } = await driver.discover(ctx(), {});
    expect(instances.map((i) => [i.externalId, i.running])).toEqual([
      ['fault-a', true],
      ['fault-b', true],
    ]);
    const nic = instances[0]!.nics[0]!;
    expect(nic).toMatchObject({ name: 'eth0', mac: mac.a, addresses: [`${address.a}/24`] });
    // the veth LXD made, in the namespace LXD runs in, attached to the lab's bridge
    const [link] = JSON.parse(await lxd.host.exec('ip', ['-j', 'link', 'show', 'dev', nic.hostInterface!])) as { master?: string }[];
    expect(link?.master).toBe(lxd.network);
  });

  it('reports HOST_UNREACHABLE per object while LXD is stopped, keeps forwarding, and converges when it is back', async () => {
    const first = await driver.apply(ctx(), { desired: state([instance('a', { portForwards: [forward('00f001', 18080, address.a, 8080)] })]) });
    expect(statuses(first.objects)).toEqual(['nic:applied', 'port_forward:applied']);
    expect(await eventually(() => tcp(18080))).toBe('got:tcp-a-8080');

    await lxd.stopDaemon();
    const t0 = Date.now();
    const desired = state([instance('a', { portForwards: [forward('00f001', 18080, address.a, 8080), forward('00f002', 18081, address.a, 8081)] })]);
    const down = await driver.apply(ctx(), { desired });
    console.log(`[lxd faults] apply with LXD stopped returned in ${Date.now() - t0} ms`);
    expect(statuses(down.objects)).toEqual(['nic:failed:HOST_UNREACHABLE', 'port_forward:failed:HOST_UNREACHABLE', 'port_forward:failed:HOST_UNREACHABLE']);
    expect(down.objects.find((o) => o.objectType === 'nic')?.error?.message).toMatch(/LXD is unreachable on .*unix\.socket/);
    // the container runs on without its daemon, and the nftables side still applies
    expect(await tcp(18080)).toBe('got:tcp-a-8080');
    await expect(driver.discover(ctx(), {})).rejects.toMatchObject({ code: 'HOST_UNREACHABLE' });

    await lxd.startDaemon();
    const back = await driver.apply(ctx(), { desired, repair: true });
    expect(statuses(back.objects)).toEqual(['nic:applied', 'port_forward:applied', 'port_forward:applied']);
    expect(await eventually(() => tcp(18081))).toBe('got:tcp-a-8081');
    expect(diffObservation(expectedObservation(desired), (await driver.observe(ctx(), { desired })).state)).toEqual([]);
  });

  it('fails the objects of an instance LXD loses in the middle of an apply, and converges on the next one', async () => {
    // a relay in front of LXD's socket that dies as the driver starts changing the instance
    const relay = await cutOnFirstChange(lxd.client.socketPath, join(lxd.dir, 'relay.socket'));
    const cut = await open({ socket: relay.path, hostNetns: lxd.host.name });
    const network2 = await lxd.addNetwork('10.78.0.1/24');
    const second = {
      id: '00000000-0000-4000-8000-0000000000c9',
      name: 'eth1',
      mac: '02:47:48:00:01:1a',
      network: network2,
      addresses: [{ address: '10.78.0.20', prefixLength: 24, delegated: false, gateway: null, dns: [] }],
    };
    const a = instance('a', { portForwards: [forward('00f001', 18080, address.a, 8080)] });
    const desired = state([{ ...a, nics: [...a.nics, second] }]);
    try {
      const during = await cut.apply(ctx(), { desired });
      expect(relay.cut()).toBe(true);
      expect(statuses(during.objects)).toEqual(['nic:failed:HOST_UNREACHABLE', 'nic:failed:HOST_UNREACHABLE', 'port_forward:failed:HOST_UNREACHABLE']);
    } finally {
      await relay.close();
    }
    const after = await driver.apply(ctx(), { desired });
    expect(statuses(after.objects)).toEqual(['nic:applied', 'nic:applied', 'port_forward:applied']);
    expect(after.changed).toBe(true);
    const nics = (await driver.discover(ctx(), {})).instances.find((i) => i.externalId === 'fault-a')!.nics;
    expect(nics.find((n) => n.mac === second.mac)).toMatchObject({ name: 'eth1', addresses: ['10.78.0.20/24'] });
    expect((await driver.apply(ctx(), { desired: state(desired.instances) })).changed).toBe(false);
    // back to one NIC: the hot-plugged device goes
    await driver.apply(ctx(), { desired: state([a]) });
    const config = await lxd.client.call<LxdInstance>('GET', '/1.0/instances/fault-a');
    expect(Object.keys(config.devices)).not.toContain(nicDeviceName(second.id));
  });

  it('hot-plugs a NIC with its static address inside the guest, reachable through a forward, and removes it again', async () => {
    const network3 = await lxd.addNetwork('10.79.0.1/24');
    const extra = {
      id: '00000000-0000-4000-8000-0000000000d9',
      name: 'eth2',
      mac: '02:47:48:00:01:2a',
      network: network3,
      addresses: [{ address: '10.79.0.30', prefixLength: 24, delegated: false, gateway: '10.79.0.1', dns: [] }],
    };
    const b = instance('b');
    const desired = state([{ ...b, nics: [b.nics[0]!, extra], portForwards: [forward('00f0b2', 18082, '10.79.0.30', 8081)] }]);
    const t0 = Date.now();
    const result = await driver.apply(ctx(), { desired });
    console.log(`[lxd faults] hot-plug apply (device add + exec in the guest) took ${Date.now() - t0} ms`);
    expect(statuses(result.objects)).toEqual(['nic:applied', 'nic:applied', 'port_forward:applied']);
    const fresh = await lxd.client.call<LxdInstance>('GET', '/1.0/instances/fault-b');
    expect(fresh.devices[nicDeviceName(extra.id)]).toMatchObject({
      type: 'nic',
      network: network3,
      name: 'eth2',
      hwaddr: extra.mac,
      'ipv4.address': '10.79.0.30',
    });
    expect(fresh.config[OWNER_KEY]).toBe(ids.b);
    // the guest has the address on eth2 (the driver configured it through the exec API)
    const guest = JSON.parse(await run('ip', ['-j', 'addr', 'show', 'dev', 'eth2'], { netns: lxd.instanceNetns('fault-b')! })) as {
      addr_info: { local: string }[];
    }[];
    expect(guest[0]!.addr_info.map((a) => a.local)).toContain('10.79.0.30');
    // the exec's recorded output is not left behind in LXD
    expect((await lxd.client.call<string[]>('GET', '/1.0/instances/fault-b/logs')).filter((l) => l.includes('/exec_'))).toEqual([]);
    expect(await eventually(() => tcp(18082))).toBe('got:tcp-b-8081');
    // release takes the hot-plugged NIC, the tag and the forward
    expect(await driver.release(ctx(), { instanceId: ids.b })).toEqual({ released: true });
    expect(await driver.release(ctx(), { instanceId: ids.b })).toEqual({ released: false });
    const released = await lxd.client.call<LxdInstance>('GET', '/1.0/instances/fault-b');
    expect(Object.keys(released.devices).sort()).toEqual(['eth0', 'root']);
    expect(released.config[OWNER_KEY]).toBeUndefined();
    expect(await tcp(18082)).not.toMatch(/^got:/);
  });

  it("refuses to shape a NIC that carries LXD's own limits (CONFLICT, LXD's qdisc untouched), and shapes it once they are gone", async () => {
    const path = '/1.0/instances/fault-a';
    const eth0 = (await lxd.client.call<LxdInstance>('GET', path)).devices.eth0!;
    await lxd.client.call('PATCH', path, { devices: { eth0: { ...eth0, 'limits.ingress': '10Mbit' } } });
    const veth = (await driver.discover(ctx(), {})).instances.find((i) => i.externalId === 'fault-a')!.nics[0]!.hostInterface!;
    const lxdQdisc = await lxd.host.exec('tc', ['qdisc', 'show', 'dev', veth, 'root']);
    expect(lxdQdisc).toMatch(/htb 1: root/);
    const limit = {
      id: '00000000-0000-4000-8000-0000000000e1',
      nicId: null,
      ingressBps: 20_000_000,
      egressBps: 30_000_000,
      ingressBurstBytes: null,
      egressBurstBytes: null,
      monthlyQuotaBytes: null,
      quotaAction: null,
      throttleBps: null,
    };
    const desired = () => state([instance('a', { portForwards: [forward('00f001', 18080, address.a, 8080)], bandwidth: [limit] })]);
    const refused = await driver.apply(ctx(), { desired: desired() });
    const result = refused.objects.find((o) => o.objectType === 'bandwidth_limit')!;
    expect(result).toMatchObject({ status: 'failed', error: { code: 'CONFLICT' } });
    expect(result.error!.message).toMatch(/limits\.ingress=10Mbit/);
    expect(await lxd.host.exec('tc', ['qdisc', 'show', 'dev', veth, 'root'])).toBe(lxdQdisc);

    await lxd.client.call('PATCH', path, { devices: { eth0 } });
    const shaped = await driver.apply(ctx(), { desired: desired() });
    expect(shaped.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    const observed = (await driver.observe(ctx(), { desired: desired() })).state.shaping;
    expect(observed).toEqual([{ instanceId: ids.a, nicId: desired().instances[0]!.nics[0]!.id, ingressBps: 20_000_000, egressBps: 30_000_000 }]);
    expect((await driver.apply(ctx(), { desired: desired() })).changed).toBe(false);
  });

  it('fails only the objects of an instance deleted behind its back; gc removes its leftovers', async () => {
    const desired = () =>
      state([
        instance('a', { portForwards: [forward('00f001', 18080, address.a, 8080)] }),
        instance('b', { portForwards: [forward('00f0b1', 18083, address.b, 8080)] }),
      ]);
    const ok = await driver.apply(ctx(), { desired: desired() });
    expect(ok.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    expect(await eventually(() => tcp(18083))).toBe('got:tcp-b-8080');

    await lxd.destroyInstance('fault-b');
    const after = await driver.apply(ctx(), { desired: desired() });
    const failed = after.objects.filter((o) => o.status === 'failed');
    expect(failed.map((o) => `${o.objectType}:${o.error?.code}`).sort()).toEqual(['nic:TRANSIENT', 'port_forward:TRANSIENT']);
    expect(failed[0]!.error!.message).toMatch(/LXD has no instance fault-b/);
    expect(await tcp(18080)).toBe('got:tcp-a-8080');
    expect(await tcp(18083)).not.toMatch(/^got:/);
    expect((await driver.discover(ctx(), {})).instances.map((i) => i.externalId)).toEqual(['fault-a']);

    // a new process (nothing in memory) finds the orphan by its tags
    const fresh = await open({ socket: lxd.client.socketPath, hostNetns: lxd.host.name });
    expect((await fresh.gc(ctx(), { validInstanceIds: [ids.a] })).removedInstanceIds).toEqual([ids.b]);
    const observed = (await fresh.observe(ctx(), {})).state;
    expect(observed.forwards.map((f) => f.hostPort)).toEqual([18080]);
    expect(observed.firewalls.map((f) => f.instanceId)).toEqual([ids.a]);
    expect(await tcp(18080)).toBe('got:tcp-a-8080');
  });
});

/**
 * A unix-socket relay to LXD that passes requests through until the first one that changes
 * something (not a GET), then drops every connection and stops listening: what the driver sees
 * when LXD dies in the middle of an apply.
 */
async function cutOnFirstChange(target: string, path: string): Promise<{ path: string; cut: () => boolean; close: () => Promise<void> }> {
  await rm(path, { force: true });
  const sockets = new Set<Socket>();
  let wasCut = false;
  const server: Server = createServer((client) => {
    sockets.add(client);
    const upstream = connect(target);
    sockets.add(upstream);
    client.on('data', (chunk: Buffer) => {
      if (!wasCut && !chunk.subarray(0, 8).toString('latin1').startsWith('GET ')) {
        wasCut = true;
        server.close();
        for (const s of sockets) s.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    cut: () => wasCut,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
      await rm(path, { force: true });
    },
  };
}
