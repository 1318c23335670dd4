/**
 * The ESXi plugin when things go wrong, against vcsim and the lab (see src/testing.ts): vCenter's
 * API stopped in the middle of an apply (the gateway's table still applied, the VMs' NICs FAILED
 * with HOST_UNREACHABLE, then converging when it is back), a session terminated behind the
 * driver's back (it logs in again), a reconfigure task that fails (a VM turned into a template),
 * and a VM deleted behind Gatehouse's back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffObservation, expectedObservation, type DesiredState, type DriverContext, type NetworkDriver } from '@gatehouse/sdk';
import { eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import plugin from '../src/index.js';
import { EsxiLab, LAB_NETWORK, LAB_PUBLIC_V4, LAB_V4_PREFIX, vcsimBuildable } from '../src/testing.js';
import { childText, children, moRef } from '../src/vsphere/index.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = (await labAvailable()) && vcsimBuildable();

type Instance = DesiredState['instances'][number];

describe.skipIf(!available && !REQUIRE_SYSTEM)('esxi: faults', () => {
  let lab: EsxiLab;
  let driver: NetworkDriver;
  let revision = 0;
  const logged: string[] = [];
  let onInfo: (message: string) => void = () => {};
  const logger = { debug() {}, info: (m: string) => (logged.push(m), onInfo(m)), warn() {}, error() {} };
  const ctx = (): DriverContext => ({ logger, signal: new AbortController().signal, host: { id: 'h1', name: 'h1', publicAddresses: [LAB_PUBLIC_V4] } });
  const keys = ['a', 'b'] as const;
  const ids = { a: '00000000-0000-4000-8000-0000000000a1', b: '00000000-0000-4000-8000-0000000000b1' };
  const mac = { a: '00:50:56:00:01:0a', b: '00:50:56:00:01:0b' };
  const address = { a: `${LAB_V4_PREFIX}20`, b: `${LAB_V4_PREFIX}21` };
  const vm: Record<'a' | 'b', string> = { a: '', b: '' };
  const ns: Partial<Record<'a' | 'b', LabNamespace>> = {};
  const servers: LabServer[] = [];
  const instance = (key: 'a' | 'b'): Instance => ({
    id: ids[key],
    name: `fault-${key}`,
    externalId: vm[key],
    nics: [
      {
        id: `${ids[key].slice(0, -2)}c${key === 'a' ? 1 : 2}`,
        name: 'eth0',
        mac: mac[key],
        network: LAB_NETWORK,
        addresses: [{ address: address[key], prefixLength: 24, delegated: false, gateway: `${LAB_V4_PREFIX}1`, dns: [] }],
      },
    ],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [
      {
        id: `${ids[key].slice(0, -2)}f${key === 'a' ? 1 : 2}`,
        protocol: 'tcp',
        hostAddress: null,
        hostPorts: { start: key === 'a' ? 12080 : 12081, end: key === 'a' ? 12080 : 12081 },
        targetAddress: address[key],
        targetPorts: { start: 8080, end: 8080 },
        sourceCidrs: [],
      },
    ],
  });
  const state = (instances: Instance[]): DesiredState => ({
    apiVersion: 1,
    hostId: 'h1',
    hostName: 'h1',
    revision: ++revision,
    publicAddresses: [LAB_PUBLIC_V4],
    instances,
  });
  const statusOf = (objects: { objectType: string; objectId: string; status: string; error?: { code: string } }[], type: string) =>
    objects.filter((o) => o.objectType === type).map((o) => o.error?.code ?? o.status);
  const nicsOn = async (key: 'a' | 'b') => {
    const content = await lab.admin.retrieveOne({ type: 'VirtualMachine', value: vm[key] }, ['config.hardware.device']);
    return children(content?.props.get('config.hardware.device'), 'VirtualDevice').map((d) => childText(d, 'macAddress'));
  };

  beforeAll(async () => {
    lab = await EsxiLab.start();
    for (const key of keys) {
      const made = await lab.createInstance(`f${key}`, { mac: mac[key], address: address[key], prefixLength: 24, gateway: `${LAB_V4_PREFIX}1` });
      vm[key] = made.externalId;
      ns[key] = made.ns;
      servers.push(tcpServer(made.ns, 8080, `hello from ${key}`));
    }
    driver = await plugin.createDriver(lab.config(), ctx());
  }, 600_000);

  afterAll(async () => {
    for (const s of servers) s.stop();
    if (driver) await driver.apply(ctx(), { desired: state([]) }).catch(() => undefined);
    await driver?.close?.();
    await lab?.cleanup();
  });

  it('applies while vSphere is stopped in the middle: the table works, NICs fail HOST_UNREACHABLE, then converge when it is back', async () => {
    const a = await driver.apply(ctx(), { desired: state([instance('a')]) });
    expect(a.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    expect(await eventually(() => tcpOutcome(lab.client, LAB_PUBLIC_V4, 12080))).toBe('got:hello from a');
    // vSphere goes away between making b's shaped port group and reconfiguring b
    onInfo = (message) => {
      if (message === 'set the shaping of a port group') {
        onInfo = () => {};
        lab.sim.process.kill('SIGKILL');
      }
    };
    const shapedB = (): Instance => ({
      ...instance('b'),
      bandwidth: [
        {
          id: `${ids.b.slice(0, -2)}d1`,
          nicId: null,
          ingressBps: null,
          egressBps: 50_000_000,
          ingressBurstBytes: null,
          egressBurstBytes: null,
          monthlyQuotaBytes: null,
          quotaAction: null,
          throttleBps: null,
        },
      ],
    });
    const desired = state([instance('a'), shapedB()]);
    const first = await driver.apply(ctx(), { desired });
    await lab.stopVcsim();
    expect(statusOf(first.objects, 'nic')).toEqual(['applied', 'HOST_UNREACHABLE']);
    expect(statusOf(first.objects, 'bandwidth_limit')).toEqual(['HOST_UNREACHABLE']);
    // the gateway's table is whole and a's VM keeps its NIC: a's forward carries traffic
    expect(await eventually(() => tcpOutcome(lab.client, LAB_PUBLIC_V4, 12080))).toBe('got:hello from a');
    // still away: everything on vSphere's side fails, nothing throws
    const away = await driver.apply(ctx(), { desired: state([instance('a'), shapedB()]) });
    expect(statusOf(away.objects, 'nic')).toEqual(['HOST_UNREACHABLE', 'HOST_UNREACHABLE']);
    await lab.restartVcsim();
    const back = await driver.apply(ctx(), { desired: state([instance('a'), shapedB()]) });
    expect(back.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    expect(await nicsOn('b')).toContain(mac.b);
    expect(await eventually(() => tcpOutcome(lab.client, LAB_PUBLIC_V4, 12081))).toBe('got:hello from b');
    const observed = (await driver.observe(ctx(), { desired })).state;
    expect(diffObservation(expectedObservation(desired), observed)).toEqual([]);
    expect(observed.shaping).toEqual([{ instanceId: ids.b, nicId: instance('b').nics[0]!.id, ingressBps: null, egressBps: 50_000_000 }]);
  });

  it('logs in again when its session was terminated behind its back', async () => {
    const sc = await lab.admin.serviceContent();
    const own = await lab.admin.login();
    const sessions = children((await lab.admin.retrieveOne(sc.sessionManager, ['sessionList']))?.props.get('sessionList'), 'UserSession')
      .map((s) => childText(s, 'key')!)
      .filter((k) => k !== own);
    expect(sessions.length).toBeGreaterThan(0);
    for (const key of sessions) await lab.admin.call('TerminateSession', sc.sessionManager, { sessionId: key });
    const desired = state([instance('a')]); // b's NIC goes: a reconfigure, which needs a session
    const result = await driver.apply(ctx(), { desired });
    expect(result.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    expect(await nicsOn('b')).not.toContain(mac.b);
  });

  it('reports a reconfigure task that fails (the VM became a template) as CONFLICT, and the other VM is unaffected', async () => {
    const ref = { type: 'VirtualMachine', value: vm.b };
    await lab.admin.waitForTask(moRef(await lab.admin.call('PowerOffVM_Task', ref, {}))!, 'PowerOffVM_Task');
    await lab.admin.call('MarkAsTemplate', ref, {});
    const result = await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(statusOf(result.objects, 'nic')).toEqual(['applied', 'CONFLICT']);
    expect(result.objects.find((o) => o.objectType === 'nic' && o.status === 'failed')?.error?.message).toMatch(/NotSupported/);
    expect(await eventually(() => tcpOutcome(lab.client, LAB_PUBLIC_V4, 12080))).toBe('got:hello from a');
  });

  it('fails the objects of a VM deleted behind its back as TRANSIENT, keeps the others, and gc takes the rest', async () => {
    await lab.destroyInstance(vm.b);
    const result = await driver.apply(ctx(), { desired: state([instance('a'), instance('b')]) });
    expect(statusOf(result.objects, 'nic')).toEqual(['applied', 'TRANSIENT']);
    expect(statusOf(result.objects, 'port_forward')).toEqual(['applied', 'TRANSIENT']);
    expect((await driver.discover(ctx(), {})).instances.map((i) => i.externalId)).not.toContain(vm.b);
    const gc = await driver.gc(ctx(), { validInstanceIds: [ids.a] });
    expect(gc.removedInstanceIds).toContain(ids.b);
    expect(await eventually(() => tcpOutcome(lab.client, LAB_PUBLIC_V4, 12080))).toBe('got:hello from a');
    expect(logged.length).toBeGreaterThan(0);
  });
});
