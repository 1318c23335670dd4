/**
 * The Docker plugin when things go wrong, with a real dockerd of its own (src/testing.ts): extra
 * NICs on networks it creates (and removes), a network whose subnet conflicts, a container
 * restarted with new veths, a container deleted behind Gatehouse's back, and dockerd stopped and
 * restarted — objects fail with HOST_UNREACHABLE while it is away, converge when it is back, and
 * Gatehouse's rules and Docker's own both survive.
 */
import { ifbName, readShaping } from '@gatehouse/dataplane';
import type { DesiredState, DriverContext } from '@gatehouse/sdk';
import { eventually, tcpOutcome, tcpServer, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerDriver, MANAGED_LABEL } from '../src/driver.js';
import { validateConfig } from '../src/config.js';
import { DockerLab, REQUIRE_SYSTEM, dockerAvailable, silent, type LabContainer } from '../src/testing.js';

const available = await dockerAvailable();
type Instance = DesiredState['instances'][number];
type Nic = Instance['nics'][number];

describe.skipIf(!available && !REQUIRE_SYSTEM)('docker plugin: faults', () => {
  let d: DockerLab;
  let driver: DockerDriver;
  let net: string;
  const containers: Record<'a' | 'b', LabContainer> = {} as never;
  const servers: LabServer[] = [];
  let revision = 0;
  const ids = { a: '00000000-0000-4000-8000-00000000aa01', b: '00000000-0000-4000-8000-00000000bb01' };
  const ctx = (): DriverContext => ({ logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: ['198.51.100.1'] } });
  const nic = (id: string, network: string, address: string, gateway: string): Nic => ({
    id,
    name: 'eth',
    mac: '02:47:48:00:01:00',
    network,
    addresses: [{ address, prefixLength: 24, delegated: false, gateway, dns: [] }],
  });
  const primary = (key: 'a' | 'b') => nic(`${ids[key]}-nic0`, net, key === 'a' ? '10.77.0.10' : '10.77.0.11', '10.77.0.1');
  const instance = (key: 'a' | 'b', extra: Partial<Instance> = {}): Instance => ({
    id: ids[key],
    name: `fault-${key}`,
    externalId: containers[key].id,
    nics: [primary(key)],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [forward(`${ids[key]}-f0`, key === 'a' ? 18080 : 18081, key === 'a' ? '10.77.0.10' : '10.77.0.11')],
    ...extra,
  });
  const forward = (id: string, hostPort: number, target: string) => ({
    id,
    protocol: 'tcp' as const,
    hostAddress: null,
    hostPorts: { start: hostPort, end: hostPort },
    targetAddress: target,
    targetPorts: { start: 8080, end: 8080 },
    sourceCidrs: [],
  });
  const limit = {
    id: `${ids.a}-bw`,
    nicId: null,
    ingressBps: 20_000_000,
    egressBps: 30_000_000,
    ingressBurstBytes: null,
    egressBurstBytes: null,
    monthlyQuotaBytes: null,
    quotaAction: null,
    throttleBps: null,
  };
  const state = (instances: Instance[]): DesiredState => ({
    apiVersion: 1,
    hostId: 'h',
    hostName: 'h',
    revision: ++revision,
    publicAddresses: ['198.51.100.1'],
    instances,
  });
  const tcp = (port: number) => tcpOutcome(d.client, '198.51.100.1', port);
  const failures = (objects: { status: string; objectType: string; error?: { code: string } }[]) =>
    objects.filter((o) => o.status !== 'applied').map((o) => `${o.objectType}:${o.error?.code}`);
  /** TCP servers answering `tcp-<key>` on 8080 in the container's current namespace. */
  const serve = async (key: 'a' | 'b') => servers.push(tcpServer(await d.namespaceOf(containers[key].id), 8080, `tcp-${key}`));
  const placeOf = async (key: 'a' | 'b') => {
    const found = (await driver.discover()).instances.find((i) => i.externalId === containers[key].id)!;
    return found.nics.find((n) => n.addresses.includes(`${key === 'a' ? '10.77.0.10' : '10.77.0.11'}/24`))!.hostInterface!;
  };
  const dockerRules = async () =>
    [...(await d.host.exec('iptables', ['-S'])).split('\n'), ...(await d.host.exec('iptables', ['-t', 'nat', '-S'])).split('\n')].sort();

  beforeAll(async () => {
    d = await DockerLab.create();
    net = `${d.prefix}net`;
    await d.createNetwork(net, '10.77.0.0/24', '10.77.0.1');
    containers.a = await d.createContainer('a', { network: net, address: '10.77.0.10' });
    containers.b = await d.createContainer('b', { network: net, address: '10.77.0.11' });
    await serve('a');
    await serve('b');
    driver = new DockerDriver(validateConfig({ socketPath: d.socketPath, hostNetns: d.host.name }));
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    try {
      if (driver && d?.pid !== undefined) await driver.apply(ctx(), { desired: state([]) });
    } finally {
      await driver?.close();
      await d?.cleanup();
    }
  });

  it('connects an extra NIC on a network it creates, reports it, and disconnects it (and removes the network) when no longer desired', async () => {
    const extraNet = `${d.prefix}x`;
    const extra = nic(`${ids.a}-nic1`, extraNet, '10.78.0.5', '10.78.0.1');
    const desired = () => state([instance('a', { nics: [primary('a'), extra], portForwards: [forward(`${ids.a}-f1`, 18090, '10.78.0.5')] }), instance('b')]);
    const first = await driver.apply(ctx(), { desired: desired() });
    expect(failures(first.objects)).toEqual([]);
    expect(first.changed).toBe(true);
    expect((await d.engine.network(extraNet))?.Labels?.[MANAGED_LABEL]).toBe('true');
    const found = (await driver.discover()).instances.find((i) => i.externalId === containers.a.id)!;
    const second = found.nics.find((n) => n.addresses.includes('10.78.0.5/24'));
    expect(second).toMatchObject({ name: 'eth1' });
    expect(second?.hostInterface).toMatch(/^veth/);
    // the server listens on every address: the forward reaches it through the new NIC
    expect(await eventually(() => tcp(18090))).toBe('got:tcp-a');
    expect((await driver.apply(ctx(), { desired: desired() })).changed).toBe(false);

    const removed = await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(failures(removed.objects)).toEqual([]);
    expect(removed.changed).toBe(true);
    expect(Object.keys((await d.engine.container(containers.a.id))!.NetworkSettings.Networks!)).toEqual([net]);
    expect(await d.engine.network(extraNet)).toBeUndefined();
    expect(await tcp(18080)).toBe('got:tcp-a');
  });

  it('refuses a NIC whose network conflicts with a foreign one, with CONFLICT and nothing half-applied', async () => {
    const foreign = `${d.prefix}user`;
    await d.createNetwork(foreign, '10.88.0.0/16', '10.88.0.1');
    const fingerprint = async () => [
      JSON.stringify((await d.engine.networks()).map((n) => n.Name).sort()),
      JSON.stringify(await d.engine.container(containers.a.id)),
    ];
    const before = await fingerprint();
    // a new network whose subnet overlaps the foreign one: Docker refuses to create it
    const overlapping = nic(`${ids.a}-nic2`, `${d.prefix}y`, '10.88.1.5', '10.88.1.1');
    // the foreign network itself, with an address outside its subnet
    const outside = nic(`${ids.a}-nic3`, foreign, '10.99.0.5', '10.99.0.1');
    for (const bad of [overlapping, outside]) {
      const result = await driver.apply(ctx(), { desired: state([instance('a', { nics: [primary('a'), bad] }), instance('b')]) });
      const failed = result.objects.filter((o) => o.status === 'failed');
      expect(failed.map((o) => [o.objectId, o.error?.code])).toEqual([[bad.id, 'CONFLICT']]);
      expect(failed[0]!.error!.message).toMatch(bad === overlapping ? /overlaps/ : /does not hold 10\.99\.0\.5/);
      expect(await fingerprint()).toEqual(before);
      // the rest still applies
      expect(await tcp(18080)).toBe('got:tcp-a');
    }
    await d.engine.removeNetwork(foreign);
  });

  it('follows a restarted container to its new veth: drift sees it, apply moves the shaping, the old ifb goes', async () => {
    const desired = () => state([instance('a', { bandwidth: [limit] }), instance('b')]);
    expect(failures((await driver.apply(ctx(), { desired: desired() })).objects)).toEqual([]);
    const before = await placeOf('a');
    expect(await readShaping(before, { netns: d.host.name })).toMatchObject({ ingressBps: 20_000_000, egressBps: 30_000_000 });
    expect((await driver.drift(ctx(), { desired: desired(), thorough: true })).differences).toEqual([]);

    const r = await d.engine.send('POST', `/containers/${containers.a.id}/restart?t=1`);
    expect(r.status).toBe(204);
    await serve('a');
    const after = await placeOf('a');
    expect(after).not.toBe(before);
    expect((await driver.drift(ctx(), { desired: desired(), thorough: false })).differences.join('\n')).toMatch(/no longer on|now on/);

    const repaired = await driver.apply(ctx(), { desired: desired(), repair: true });
    expect(failures(repaired.objects)).toEqual([]);
    expect(repaired.changed).toBe(true);
    expect(await readShaping(after, { netns: d.host.name })).toMatchObject({ ingressBps: 20_000_000, egressBps: 30_000_000 });
    expect((await driver.drift(ctx(), { desired: desired(), thorough: true })).differences).toEqual([]);
    const ifbs = (await d.host.exec('ip', ['-br', 'link', 'show', 'type', 'ifb'])).split('\n').filter((l) => l.startsWith('ghifb'));
    expect(ifbs.map((l) => l.split(/[\s@]/)[0])).toEqual([ifbName(after)]);
    expect(await eventually(() => tcp(18080))).toBe('got:tcp-a');
    // limits removed: no shaping and no ifb of ours left
    await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(await readShaping(after, { netns: d.host.name })).toBeNull();
    expect(await d.host.exec('ip', ['-br', 'link', 'show', 'type', 'ifb'])).not.toMatch(/ghifb/);
  });

  it('dockerd stopped: objects fail with HOST_UNREACHABLE; back again: they converge, and Gatehouse rules and Docker rules are both intact', async () => {
    const desired = () => state([instance('a', { bandwidth: [limit] }), instance('b')]);
    expect(failures((await driver.apply(ctx(), { desired: desired() })).objects)).toEqual([]);
    const dockerBefore = await dockerRules();
    // stopped in the middle of an apply: whatever that apply reports, the next ones must settle
    const racing = driver.apply(ctx(), { desired: desired(), repair: true }).catch((err: unknown) => err);
    await d.stopDaemon();
    await racing;

    const down = await driver.apply(ctx(), { desired: desired(), repair: true });
    expect(new Set(failures(down.objects))).toEqual(new Set(['nic:HOST_UNREACHABLE', 'port_forward:HOST_UNREACHABLE', 'bandwidth_limit:HOST_UNREACHABLE']));
    expect(down.objects.filter((o) => o.status === 'failed')).toHaveLength(down.objects.length);
    // the table itself needs no Docker: it is still ours and complete
    expect((await driver.observe(ctx(), {})).state.forwards.map((f) => f.hostPort)).toEqual([18080, 18081]);

    await d.startDaemon();
    // restart policy "always": the containers come back, in new namespaces with new veths
    for (const key of ['a', 'b'] as const) {
      for (let i = 0; i < 100 && !(await d.engine.container(containers[key].id))?.State.Running; i++) await new Promise((r) => setTimeout(r, 100));
      await serve(key);
    }
    expect((await driver.drift(ctx(), { desired: desired(), thorough: true })).differences).not.toEqual([]);
    const up = await driver.apply(ctx(), { desired: desired(), repair: true });
    expect(failures(up.objects)).toEqual([]);
    expect(await eventually(() => tcp(18080))).toBe('got:tcp-a');
    expect(await tcp(18081)).toBe('got:tcp-b');
    expect(await readShaping(await placeOf('a'), { netns: d.host.name })).toMatchObject({ ingressBps: 20_000_000 });
    expect((await driver.drift(ctx(), { desired: desired(), thorough: true })).differences).toEqual([]);
    // Docker rebuilt its own rules (same set; it may reorder) and left ours alone
    expect(await dockerRules()).toEqual(dockerBefore);
    expect(await d.host.exec('nft', ['list', 'tables'])).toMatch(/table inet gatehouse/);
  });

  it('a container deleted behind its back: its objects fail with TRANSIENT, the others keep working, release and gc clean up', async () => {
    await d.removeContainer(containers.b.id);
    const result = await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(failures(result.objects).sort()).toEqual(['nic:TRANSIENT', 'port_forward:TRANSIENT']);
    expect(result.objects.find((o) => o.status === 'failed')!.error!.message).toMatch(/no container/);
    expect(await tcp(18080)).toBe('got:tcp-a');
    expect(await tcp(18081)).not.toMatch(/^got:/);
    expect((await driver.release(ctx(), { instanceId: ids.b })).released).toBe(true);
    expect((await driver.release(ctx(), { instanceId: ids.b })).released).toBe(false);
    expect(await driver.gc(ctx(), { validInstanceIds: [ids.a] })).toEqual({ removedInstanceIds: [] });
    expect((await driver.observe(ctx(), {})).state.forwards.map((f) => f.hostPort)).toEqual([18080]);
    expect(await tcp(18080)).toBe('got:tcp-a');
    // the discovery no longer lists it
    expect((await driver.discover()).instances.map((i) => i.externalId)).toEqual([containers.a.id]);
  });
});
