/**
 * The vSphere client against vcsim (no root): service content, login and the session cookie,
 * properties through a container view, NIC reconfiguration and task waiting, the port-group calls
 * with shaping, faults as typed errors, a terminated session logged in again, and TLS pinning.
 */
import { ConflictError, HostUnreachableError, TransientError } from '@gatehouse/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVcsim, startVcsim, vcsimBuildable, type Vcsim } from '../src/vcsim.js';
import { VsphereClient, VsphereFault, childText, children, moRef, ref, toSdkError, type VsphereEndpoint } from '../src/vsphere/index.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';

describe.skipIf(!vcsimBuildable() && !REQUIRE_SYSTEM)('vSphere client against vcsim', () => {
  let sim: Vcsim;
  let endpoint: VsphereEndpoint;
  beforeAll(async () => {
    const { path } = await buildVcsim();
    sim = await startVcsim(path);
    endpoint = { url: sim.url, username: sim.username, password: sim.password, tls: { thumbprint: sim.thumbprint }, timeoutMs: 10_000 };
  }, 600_000);
  afterAll(async () => sim?.stop());

  it('reads the service content and lists VMs with their NICs through a container view', async () => {
    const client = new VsphereClient(endpoint);
    const sc = await client.serviceContent();
    expect(sc.apiType).toBe('HostAgent');
    const vms = await client.retrieveAll('VirtualMachine', ['name', 'runtime.powerState', 'config.hardware.device'], undefined);
    expect(vms.length).toBe(2);
    for (const vm of vms) {
      expect(vm.obj.type).toBe('VirtualMachine');
      expect(childText({ name: 'x', attrs: {}, children: [vm.props.get('runtime.powerState')!], text: '' }, 'val')).toBe('poweredOn');
      const devices = children(vm.props.get('config.hardware.device'), 'VirtualDevice');
      expect(devices.some((d) => d.attrs.type === 'VirtualE1000')).toBe(true);
    }
    await client.logout();
  });

  it('hot-adds a vmxnet3 NIC with a manual MAC on a port group, edits and removes it, waiting for each task', async () => {
    const client = new VsphereClient(endpoint);
    const [vm] = await client.retrieveAll('VirtualMachine', ['name']);
    await client.reconfigureNics(vm!.obj, [{ operation: 'add', model: 'VirtualVmxnet3', portGroup: 'VM Network', mac: '00:50:56:3f:00:01' }]);
    const nic = () =>
      client
        .retrieveOne(vm!.obj, ['config.hardware.device'])
        .then((c) => children(c!.props.get('config.hardware.device'), 'VirtualDevice').find((d) => childText(d, 'macAddress') === '00:50:56:3f:00:01'));
    const added = await nic();
    expect(added?.attrs.type).toBe('VirtualVmxnet3');
    expect(childText(added, 'addressType')).toBe('manual');
    await client.addPortGroup({ name: 'gh-client-test', vlanId: 0, vswitchName: 'vSwitch0' });
    await client.reconfigureNics(vm!.obj, [
      {
        operation: 'edit',
        model: 'VirtualVmxnet3',
        key: Number(childText(added, 'key')),
        portGroup: 'gh-client-test',
        mac: '00:50:56:3f:00:01',
        connected: true,
      },
    ]);
    const moved = await nic();
    expect(
      childText(
        moved?.children.find((c) => c.name === 'backing'),
        'deviceName',
      ),
    ).toBe('gh-client-test');
    expect(childText(moved, 'macAddress')).toBe('00:50:56:3f:00:01');
    await client.reconfigureNics(vm!.obj, [{ operation: 'remove', model: 'VirtualVmxnet3', key: Number(childText(moved, 'key')) }]);
    expect(await nic()).toBeUndefined();
    await client.removePortGroup('gh-client-test');
  });

  it('adds, updates (the call main.go adds to vcsim) and removes a port group with a shaping policy', async () => {
    const client = new VsphereClient(endpoint);
    const shaping = { enabled: true, averageBandwidth: 10_000_000, peakBandwidth: 20_000_000, burstSize: 102_400 };
    await client.addPortGroup({ name: 'gh-shaped', vlanId: 12, vswitchName: 'vSwitch0', shaping });
    expect((await client.portGroups()).find((p) => p.name === 'gh-shaped')).toEqual({ name: 'gh-shaped', vlanId: 12, vswitchName: 'vSwitch0', shaping });
    await client.updatePortGroup({ name: 'gh-shaped', vlanId: 12, vswitchName: 'vSwitch0', shaping: { ...shaping, averageBandwidth: 5_000_000 } });
    expect((await client.portGroups()).find((p) => p.name === 'gh-shaped')?.shaping?.averageBandwidth).toBe(5_000_000);
    await client.removePortGroup('gh-shaped');
    expect((await client.portGroups()).some((p) => p.name === 'gh-shaped')).toBe(false);
  });

  it('turns faults into typed errors: a duplicate port group, a missing one, a task that fails (reconfiguring a template)', async () => {
    const client = new VsphereClient(endpoint);
    await client.addPortGroup({ name: 'gh-dup', vlanId: 0, vswitchName: 'vSwitch0' });
    const dup = await client.addPortGroup({ name: 'gh-dup', vlanId: 0, vswitchName: 'vSwitch0' }).catch((e: unknown) => e);
    expect(dup).toBeInstanceOf(VsphereFault);
    expect((dup as VsphereFault).type).toBe('DuplicateName');
    expect(toSdkError(dup, 'adding a port group')).toBeInstanceOf(ConflictError);
    await client.removePortGroup('gh-dup');
    const missing = await client.removePortGroup('gh-dup').catch((e: unknown) => e);
    expect((missing as VsphereFault).type).toBe('NotFound');
    expect(toSdkError(missing, 'removing a port group')).toBeInstanceOf(TransientError);
    // a VM someone turned into a template: ESXi accepts the reconfigure, then the task fails
    const vms = await client.retrieveAll('VirtualMachine', ['name']);
    const vm = vms[vms.length - 1]!.obj;
    await client.waitForTask(moRef(await client.call('PowerOffVM_Task', vm, {}))!, 'PowerOffVM_Task');
    await client.call('MarkAsTemplate', vm, {});
    const failed = await client
      .reconfigureNics(vm, [{ operation: 'add', model: 'VirtualVmxnet3', portGroup: 'VM Network', mac: '00:50:56:3f:00:02' }])
      .catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(VsphereFault);
    expect((failed as VsphereFault).type).toBe('NotSupported');
    expect(toSdkError(failed, 'adding a NIC')).toBeInstanceOf(ConflictError);
  });

  it('logs in again when the session was terminated, and keeps working', async () => {
    const client = new VsphereClient(endpoint);
    const admin = new VsphereClient(endpoint);
    const key = await client.login();
    const sc = await admin.serviceContent();
    await admin.call('TerminateSession', sc.sessionManager, { sessionId: key });
    const pc = await client.call('AddPortGroup', await client.networkSystem(), {
      portgrp: { name: 'gh-relogin', vlanId: 0, vswitchName: 'vSwitch0', policy: {} },
    });
    expect(pc).toBeDefined();
    expect((await client.portGroups()).some((p) => p.name === 'gh-relogin')).toBe(true);
    await client.removePortGroup('gh-relogin');
    expect(moRef(undefined)).toBeUndefined();
    expect(ref({ type: 'Folder', value: 'x' })).toEqual({ $attrs: { type: 'Folder' }, $text: 'x' });
  });

  it('refuses a server whose certificate is not the pinned one, and one the CA does not sign', async () => {
    const wrong = new VsphereClient({ ...endpoint, tls: { thumbprint: '00'.repeat(32) } });
    const err = await wrong.serviceContent().catch((e: unknown) => e);
    expect(String(err)).toMatch(/not the pinned/);
    expect(toSdkError(err, 'connecting')).toBeInstanceOf(HostUnreachableError);
    const untrusted = new VsphereClient({ ...endpoint, tls: { ca: '' } });
    expect(toSdkError(await untrusted.serviceContent().catch((e: unknown) => e), 'connecting')).toBeInstanceOf(HostUnreachableError);
  });
});
