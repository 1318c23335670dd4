/**
 * The Proxmox plugin when things go wrong, as root against the lab (schema-enforcing PVE, node and
 * guests in network namespaces), each with the outcome a user wants and nothing half-applied:
 * PVE unreachable in the middle of an apply (objects fail retryably, traffic through the table
 * keeps flowing, the next apply converges), a failing hot-plug task (that NIC fails with PVE's
 * reason and its change is reverted, the rest applies), a concurrent edit (the digest conflict is
 * recomputed on the fresh config and the other edit is kept), a VM deleted behind Gatehouse's
 * back (its objects fail, release reclaims it), a token lacking a privilege (a configuration error
 * naming it, the guest unchanged), and a second NIC hot-plugged that then carries traffic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredState, DriverContext, NetworkDriver } from '@gatehouse/sdk';
import { eventually, tcpOutcome, type LabServer } from '@gatehouse/sdk/testkit';
import plugin, { NIC_TAG, guestNics } from '../src/index.js';
import { LAB_PUBLIC_V4, LAB_V4_PREFIX, PveLab, pveLabAvailable } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await pveLabAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };

type Instance = DesiredState['instances'][number];

describe.skipIf(!available && !REQUIRE_SYSTEM)('proxmox: faults', () => {
  let lab: PveLab;
  let driver: NetworkDriver;
  let revision = 0;
  const vmids = { a: '', b: '' };
  const servers: LabServer[] = [];
  const ctx = (): DriverContext => ({ logger: silent, signal: new AbortController().signal, host: { id: 'h1', name: 'h1', publicAddresses: [LAB_PUBLIC_V4] } });
  const ids = { a: '00000000-0000-4000-8000-0000000000a1', b: '00000000-0000-4000-8000-0000000000b1' };
  const mac = { a: '02:47:48:00:01:0a', b: '02:47:48:00:01:0b', a2: '02:47:48:00:02:0a' };
  const address = { a: `${LAB_V4_PREFIX}20`, b: `${LAB_V4_PREFIX}21`, a2: `${LAB_V4_PREFIX}30` };
  const nic = (key: 'a' | 'b' | 'a2', n: number) => ({
    id: `00000000-0000-4000-8000-0000000${key.padEnd(2, '0')}c0${n}`,
    name: `eth${n - 1}`,
    mac: mac[key],
    network: 'vmbr0',
    addresses: [{ address: address[key], prefixLength: 24, delegated: false, gateway: n === 1 ? `${LAB_V4_PREFIX}1` : null, dns: [] }],
  });
  const forward = (key: 'a' | 'b' | 'a2', hostPort: number) => ({
    id: `00000000-0000-4000-8000-0000000${key.padEnd(2, '0')}f${hostPort}`.slice(0, 36),
    protocol: 'tcp' as const,
    hostAddress: null,
    hostPorts: { start: hostPort, end: hostPort },
    targetAddress: address[key],
    targetPorts: { start: 8080, end: 8080 },
    sourceCidrs: [],
  });
  const instance = (key: 'a' | 'b', extra: Partial<Instance> = {}): Instance => ({
    id: ids[key],
    name: `fault-${key}`,
    externalId: vmids[key],
    nics: [nic(key, 1)],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [forward(key, key === 'a' ? 20080 : 20081)],
    ...extra,
  });
  /** a with its second NIC (hot-plugged) and a forward to it. */
  const withSecondNic = () => instance('a', { nics: [nic('a', 1), nic('a2', 2)], portForwards: [forward('a', 20080), forward('a2', 20082)] });
  const state = (instances: Instance[]): DesiredState => ({
    apiVersion: 1,
    hostId: 'h1',
    hostName: 'h1',
    revision: ++revision,
    publicAddresses: [LAB_PUBLIC_V4],
    instances,
  });
  const tcp = (port: number) => tcpOutcome(lab.client, LAB_PUBLIC_V4, port);
  const failed = (objects: { objectType: string; status: string; error?: { code: string; message: string } }[]) =>
    objects.filter((o) => o.status === 'failed').map((o) => `${o.objectType}:${o.error?.code}`);
  const guest = (key: 'a' | 'b') => lab.server.guests.get(Number(vmids[key]))!;
  const ownNics = (key: 'a' | 'b') => (guest(key).config.tags ?? '').split(';').filter((t) => t.startsWith(NIC_TAG));

  beforeAll(async () => {
    lab = await PveLab.start();
    driver = await plugin.createDriver(lab.pluginConfig(), ctx());
    const gw = `${LAB_V4_PREFIX}1`;
    const a = await lab.createGuest('qemu', 'fault-a', [{ name: 'eth0', mac: mac.a, network: 'vmbr0', address: address.a, prefixLength: 24, gateway: gw }]);
    const b = await lab.createGuest('lxc', 'fault-b', [{ name: 'eth0', mac: mac.b, network: 'vmbr0', address: address.b, prefixLength: 24, gateway: gw }]);
    vmids.a = a.externalId;
    vmids.b = b.externalId;
    servers.push(await a.tcpServer(8080, 'tcp-a'), await b.tcpServer(8080, 'tcp-b'));
  }, 120_000);

  afterAll(async () => {
    for (const s of servers) s.stop();
    if (driver) await driver.apply(ctx(), { desired: state([]) }).catch(() => undefined);
    await lab?.cleanup();
  });

  it('applies and carries TCP to a QEMU VM and an LXC container', async () => {
    const result = await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(failed(result.objects)).toEqual([]);
    expect(await eventually(() => tcp(20080))).toBe('got:tcp-a');
    expect(await eventually(() => tcp(20081))).toBe('got:tcp-b');
  });

  it('PVE unreachable in the middle of an apply: objects fail retryably, traffic keeps flowing, the next apply converges', async () => {
    lab.server.faults.onRequest = (method, path) => (method === 'POST' && /\/qemu\/\d+\/config$/.test(path) ? 'unreachable' : undefined);
    const result = await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]) });
    lab.server.faults.onRequest = undefined;
    const failures = failed(result.objects);
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.every((f) => /:(HOST_UNREACHABLE|TRANSIENT)$/.test(f))).toBe(true);
    // the hot-plug never reached PVE: no NIC, no pending change, no tag
    expect(guestNics('qemu', guest('a').config)).toHaveLength(1);
    expect(guest('a').pending).toEqual({});
    expect(ownNics('a')).toEqual([]);
    // the table was applied regardless: existing forwards still carry traffic
    expect(await tcp(20080)).toBe('got:tcp-a');
    expect(await tcp(20081)).toBe('got:tcp-b');
    await lab.server.start();
    const again = await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]) });
    expect(failed(again.objects)).toEqual([]);
    expect(ownNics('a')).toEqual([`${NIC_TAG}1`]);
  });

  it('a hot-plugged second NIC carries traffic once the guest configures it', async () => {
    const ns = await lab.guestNamespace(Number(vmids.a));
    await ns.exec('ip', ['addr', 'add', `${address.a2}/24`, 'dev', 'eth1']);
    const server = await (await import('@gatehouse/sdk/testkit')).tcpServer(ns, 8080, 'tcp-a');
    servers.push(server);
    expect(await lab.node.exec('ip', ['-br', 'link', 'show', `tap${vmids.a}i1`])).toMatch(/vmbr0|UP/);
    expect(await eventually(() => tcp(20082))).toBe('got:tcp-a');
    const { instances } = await driver.discover(ctx(), {});
    const vm = instances.find((i) => i.externalId === vmids.a)!;
    // addresses as the guest agent reports them, host devices as PVE names them
    expect(vm.nics.map((n) => [n.mac, n.addresses, n.hostInterface])).toEqual([
      [mac.a, [`${address.a}/24`], `tap${vmids.a}i0`],
      [mac.a2, [`${address.a2}/24`], `tap${vmids.a}i1`],
    ]);
  });

  it('a failing hot-plug task fails that NIC with PVE reason and is reverted; the rest applies', async () => {
    const bWithSecond = instance('b', {
      nics: [
        nic('b', 1),
        {
          ...nic('b', 2),
          mac: '02:47:48:00:02:0b',
          addresses: [{ address: `${LAB_V4_PREFIX}31`, prefixLength: 24, delegated: false, gateway: null, dns: [] }],
        },
      ],
    });
    // the QEMU VM gets a third NIC whose hot-plug task fails
    const aWithThird = { ...withSecondNic(), nics: [...withSecondNic().nics, { ...nic('a2', 3), mac: '02:47:48:00:03:0a', addresses: [] }] };
    lab.server.faults.failTasks = 1;
    const result = await driver.apply(ctx(), { desired: state([aWithThird, bWithSecond]) });
    const third = result.objects.find((o) => o.objectId === aWithThird.nics[2]!.id)!;
    expect(third.status).toBe('failed');
    expect(third.error?.code).toBe('TRANSIENT');
    expect(third.error?.message).toMatch(/hotplug problem/);
    expect(failed(result.objects)).toEqual(['nic:TRANSIENT']);
    // reverted: nothing pending, no tag for it; the LXC container's second NIC is there
    expect(guest('a').pending).toEqual({});
    expect(ownNics('a')).toEqual([`${NIC_TAG}1`]);
    expect(await lab.node.exec('ip', ['-br', 'link', 'show', `veth${vmids.b}i1`])).toContain(`veth${vmids.b}i1`);
    expect(await tcp(20080)).toBe('got:tcp-a');
    const again = await driver.apply(ctx(), { desired: state([aWithThird, bWithSecond]) });
    expect(failed(again.objects)).toEqual([]);
    expect(ownNics('a')).toEqual([`${NIC_TAG}1`, `${NIC_TAG}2`]);
    // back to one extra NIC each: what Gatehouse added and no longer wants goes
    const back = await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]) });
    expect(failed(back.objects)).toEqual([]);
    expect(guestNics('qemu', guest('a').config)).toHaveLength(2);
    expect(guestNics('lxc', guest('b').config)).toHaveLength(1);
  });

  it('a concurrent edit (digest mismatch) is recomputed on the fresh config, keeping the other edit', async () => {
    const coresBefore = Number(guest('a').config.cores);
    lab.server.faults.digestConflicts = 1;
    const aWithThird = { ...withSecondNic(), nics: [...withSecondNic().nics, { ...nic('a2', 3), mac: '02:47:48:00:03:0a', addresses: [] }] };
    const result = await driver.apply(ctx(), { desired: state([aWithThird, instance('b')]) });
    expect(failed(result.objects)).toEqual([]);
    expect(Number(guest('a').config.cores)).toBe(coresBefore + 1);
    expect(guestNics('qemu', guest('a').config).map((n) => n.mac)).toContain('02:47:48:00:03:0a');
    expect(lab.server.faults.digestConflicts).toBe(0);
    expect(failed((await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]) })).objects)).toEqual([]);
  });

  it('a token lacking a privilege: a configuration error naming it, and the guest unchanged', async () => {
    lab.server.addToken('limited@pve!agent', '1b7e0c3a-0b0e-4e8e-9d47-2f1a6c1b7e02', ['VM.Audit', 'VM.Config.Options', 'SDN.Use']);
    const limited = await plugin.createDriver(lab.pluginConfig({ tokenId: 'limited@pve!agent', secret: '1b7e0c3a-0b0e-4e8e-9d47-2f1a6c1b7e02' }), ctx());
    const configBefore = { ...guest('b').config };
    const bWithSecond = instance('b', { nics: [nic('b', 1), { ...nic('b', 2), mac: '02:47:48:00:02:0b', addresses: [] }] });
    const result = await limited.apply(ctx(), { desired: state([withSecondNic(), bWithSecond]) });
    const errors = result.objects.filter((o) => o.status === 'failed').map((o) => o.error!);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((e) => e.code === 'DRIVER_CONFIG_INVALID' && e.path === 'config.tokenId')).toBe(true);
    expect(errors[0]!.message).toMatch(/lacks the privilege VM\.Config\.Network on \/vms\/\d+/);
    expect(guest('b').config).toEqual(configBefore);
    // without VM.Audit, PVE lists nothing: the error says what may be missing
    lab.server.addToken('blind@pve!agent', '1b7e0c3a-0b0e-4e8e-9d47-2f1a6c1b7e03', []);
    const blind = await plugin.createDriver(lab.pluginConfig({ tokenId: 'blind@pve!agent', secret: '1b7e0c3a-0b0e-4e8e-9d47-2f1a6c1b7e03' }), ctx());
    const blindResult = await blind.apply(ctx(), { desired: state([instance('b')]) });
    expect(blindResult.objects.find((o) => o.objectType === 'nic')?.error?.message).toMatch(/lacks VM\.Audit on \/vms\//);
    // the other drivers replaced the shared table: the agent's repair rebuilds it
    expect(failed((await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]), repair: true })).objects)).toEqual([]);
    expect(await tcp(20080)).toBe('got:tcp-a');
  });

  it('a NIC a running VM cannot hot-plug (hotplug without network) is reported as pending until it restarts', async () => {
    const c = await lab.createGuest('qemu', 'fault-c', [], { hotplug: 'disk,usb' });
    const cInstance: Instance = {
      ...instance('a'),
      id: '00000000-0000-4000-8000-0000000000c1',
      name: 'fault-c',
      externalId: c.externalId,
      nics: [{ ...nic('a2', 1), id: '00000000-0000-4000-8000-0000000000cc', mac: '02:47:48:00:01:0c', addresses: [] }],
      portForwards: [],
    };
    const result = await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b'), cInstance]) });
    const cNic = result.objects.find((o) => o.objectId === cInstance.nics[0]!.id)!;
    expect(cNic.error?.code).toBe('TRANSIENT');
    expect(cNic.error?.message).toMatch(/pending as net0: PVE could not hot-plug it .*hotplug option lacks network.*restarts/);
    expect(Object.keys(lab.server.guests.get(c.vmid)!.pending)).toEqual(['net0']);
    expect(failed(result.objects)).toEqual(['nic:TRANSIENT']);
  });

  it('a VM deleted behind Gatehouse’s back: its objects fail, the other instance keeps working, release reclaims it', async () => {
    await lab.destroyGuest(vmids.b);
    const result = await driver.apply(ctx(), { desired: state([withSecondNic(), instance('b')]) });
    const bFailures = result.objects.filter((o) => o.status === 'failed');
    expect(bFailures.map((o) => o.objectType).sort()).toEqual(['nic', 'port_forward']);
    expect(bFailures[0]!.error?.message).toMatch(/PVE lists no guest/);
    expect(await tcp(20080)).toBe('got:tcp-a');
    expect((await driver.release(ctx(), { instanceId: ids.b })).released).toBe(true);
    expect((await driver.release(ctx(), { instanceId: ids.b })).released).toBe(false);
    const after = await driver.apply(ctx(), { desired: state([withSecondNic()]) });
    expect(failed(after.objects)).toEqual([]);
    expect(await tcp(20081)).not.toBe('got:tcp-b');
  });
});
