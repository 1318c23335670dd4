/**
 * Faults, as root, against a misbehaving controller (test/fake-controller.ts) and the real Linux
 * plugin in lab namespaces: a malformed desired state, an instance that vanished, and `nft`
 * missing from the host. Each time the agent must apply nothing wrong, keep what works working,
 * and say what failed; the agent then converges once the fault is gone.
 */
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { diffDesiredState } from '@gatehouse/agent-protocol';
import { run, type DesiredState } from '@gatehouse/sdk';
import { LinuxDriver } from '@gatehouse/plugin-linux';
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { FakeController, type Report } from './fake-controller.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const HOST_ID = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a01';

async function until(check: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; !check() && Date.now() < end;) await new Promise((r) => setTimeout(r, 50));
  return check();
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent faults', () => {
  const lab = new NetnsLab();
  const logs: string[] = [];
  const logger = {
    info: (m: string, f?: object) => logs.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m: string, f?: object) => logs.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m: string, f?: object) => logs.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  let controller: FakeController;
  let agent: HostAgent;
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  const servers: LabServer[] = [];
  const originalPath = process.env.PATH;
  let noNftDir: string | undefined;

  const instance = (n: number, externalId: string, forwards: [string, number, number][]) => ({
    id: `00000000-0000-4000-8000-00000000000${n}`,
    name: `vm${n}`,
    externalId,
    nics: [
      {
        id: `00000000-0000-4000-8000-00000000010${n}`,
        name: 'eth0',
        mac: `02:00:00:77:00:0${n}`,
        network: `${lab.prefix}br`,
        addresses: [{ address: `10.78.0.${n + 1}`, prefixLength: 24, delegated: false, gateway: '10.78.0.1', dns: [] }],
      },
    ],
    firewall: { inboundPolicy: 'allow' as const, outboundPolicy: 'allow' as const, rules: [] },
    bandwidth: [],
    portForwards: forwards.map(([id, hostPort, targetPort]) => ({
      id,
      protocol: 'tcp' as const,
      hostAddress: null,
      hostPorts: { start: hostPort, end: hostPort },
      targetAddress: `10.78.0.${n + 1}`,
      targetPorts: { start: targetPort, end: targetPort },
      sourceCidrs: [],
    })),
  });
  const state = (revision: number, instances: ReturnType<typeof instance>[]): DesiredState => ({
    apiVersion: 1,
    hostId: HOST_ID,
    hostName: 'faults',
    revision,
    publicAddresses: ['198.51.100.1'],
    instances,
  });
  const objectReport = (revision: number, objectId: string) => (r: Report) =>
    r.mutation === 'reportObjectStatus' && r.input.revision === revision && r.input.objects.some((o: { objectId: string }) => o.objectId === objectId);
  const statusOf = (r: Report, objectId: string) =>
    r.input.objects.find((o: { objectId: string }) => o.objectId === objectId) as { status: string; error: string | null };
  const tableExists = async () =>
    (JSON.parse(await run('nft', ['-j', 'list', 'tables'], { netns: host.name })) as { nftables: { table?: { name: string } }[] }).nftables.some(
      (o) => o.table?.name === 'gatehouse',
    );

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello from vm1'), tcpServer(vm, 8081, 'second service'));
    controller = await FakeController.start();
    agent = new HostAgent({
      controllerUrl: controller.url,
      token: 'unused-by-the-fake',
      hostId: HOST_ID,
      driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
      logger,
      driftIntervalMs: 300,
      backoff: { minMs: 100, maxMs: 500 },
    });
    await agent.start();
  }, 60_000);

  afterAll(async () => {
    process.env.PATH = originalPath;
    await agent?.stop();
    await controller?.close();
    for (const s of servers) s.stop();
    await lab.cleanup();
    if (noNftDir) rmSync(noNftDir, { recursive: true, force: true });
  }, 60_000);

  it('refuses a malformed desired state naming the field, applies nothing, and says so to the controller', async () => {
    const bad = state(1, [instance(1, vm.name, [['10000000-0000-4000-8000-000000000001', 70000, 8080]])]);
    controller.push(1, bad);
    const report = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && /revision 1/.test(r.input.error ?? ''));
    expect(report.input.error).toMatch(/document\.instances\[0\]\.portForwards\[0\]\.hostPorts/);
    expect(report.input.error).toContain('70000');
    expect(await tableExists()).toBe(false);

    // not a document at all, and one for another host
    const from = controller.reports.length;
    controller.push(2, 'not an object');
    await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && /revision 2/.test(r.input.error ?? ''), from);
    controller.push(3, { ...state(3, []), hostId: 'b7f3e0a4-0000-4000-8000-000000000000' });
    const other = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && /revision 3/.test(r.input.error ?? ''), from);
    expect(other.input.error).toMatch(/document\.hostId/);
    expect(await tableExists()).toBe(false);
    expect(agent.state.appliedRevision).toBeNull();
  });

  it("applies what it can when an instance has vanished, and marks only that instance's objects FAILED", async () => {
    const from = controller.reports.length;
    controller.push(
      4,
      state(4, [
        instance(1, vm.name, [['10000000-0000-4000-8000-000000000001', 18080, 8080]]),
        instance(2, `${lab.prefix}-vm2`, [['10000000-0000-4000-8000-000000000002', 18090, 8080]]),
      ]),
    );
    const report = await controller.waitForReport(objectReport(4, '10000000-0000-4000-8000-000000000001'), from);
    expect(statusOf(report, '10000000-0000-4000-8000-000000000001')).toMatchObject({ status: 'APPLIED', error: null });
    expect(statusOf(report, '10000000-0000-4000-8000-000000000002').status).toBe('FAILED');
    expect(statusOf(report, '10000000-0000-4000-8000-000000000002').error).toMatch(/vm2 .*is not on this host/);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 10_000)).toBe('got:hello from vm1');
    const host = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 4, from);
    expect(host.input.error).toMatch(/vm2/);
  });

  it('with nft missing, reports the forwards FAILED, keeps the previous ruleset carrying traffic, and converges once nft is back', async () => {
    noNftDir = mkdtempSync(join(tmpdir(), 'gatehouse-no-nft-'));
    for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin']) {
      for (const name of readdirSync(dir)) {
        if (name === 'nft') continue;
        try {
          symlinkSync(join(dir, name), join(noNftDir, name));
        } catch {
          // the same name in an earlier directory wins, as on PATH
        }
      }
    }
    process.env.PATH = noNftDir;
    const from = controller.reports.length;
    const added = '10000000-0000-4000-8000-000000000003';
    controller.push(
      5,
      state(5, [
        instance(1, vm.name, [
          ['10000000-0000-4000-8000-000000000001', 18080, 8080],
          [added, 18081, 8081],
        ]),
      ]),
    );
    const report = await controller.waitForReport(objectReport(5, added), from);
    expect(statusOf(report, added).status).toBe('FAILED');
    expect(statusOf(report, added).error).toMatch(/nft/);
    expect(statusOf(report, added).error).not.toMatch(/[\n\r]/);
    process.env.PATH = originalPath;
    // the ruleset of revision 4 is whole: its forward works, the new one is not there
    expect(await tcpOutcome(client, '198.51.100.1', 18080)).toBe('got:hello from vm1');
    expect(await tcpOutcome(client, '198.51.100.1', 18081)).not.toMatch(/^got:/);
    // nft is back: the agent's retry applies revision 5
    const retried = await controller.waitForReport((r) => objectReport(5, added)(r) && statusOf(r, added).status === 'APPLIED', from, 20_000);
    expect(statusOf(retried, added).error).toBeNull();
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18081), 10_000)).toBe('got:second service');
  }, 60_000);

  it('applies patches, and starts over from a full document when a patch does not fit or is malformed', async () => {
    const current = state(5, [
      instance(1, vm.name, [
        ['10000000-0000-4000-8000-000000000001', 18080, 8080],
        ['10000000-0000-4000-8000-000000000003', 18081, 8081],
      ]),
    ]);
    const next = state(6, [
      instance(1, vm.name, [
        ['10000000-0000-4000-8000-000000000001', 18080, 8080],
        ['10000000-0000-4000-8000-000000000004', 18082, 8081],
      ]),
    ]);
    const patch = diffDesiredState(current, next);
    expect(patch.portForwards).toHaveLength(1);

    // a patch from a revision the agent does not hold: refused, and the agent subscribes again
    let from = controller.reports.length;
    const opened = controller.subscriptionsOpened;
    controller.pushPatch(6, { ...patch, baseRevision: 3 });
    const refused = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && /revision 6/.test(r.input.error ?? ''), from);
    expect(refused.input.error).toMatch(/patch\.baseRevision/);
    expect(await until(() => controller.subscriptionsOpened > opened)).toBe(true);
    // a malformed forward in a patch: refused naming it, nothing applied
    from = controller.reports.length;
    const bad = {
      ...patch,
      portForwards: [{ ...patch.portForwards[0]!, forward: { ...patch.portForwards[0]!.forward, hostPorts: { start: 18082, end: 70000 } } }],
    };
    controller.pushPatch(6, bad);
    const malformed = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && /revision 6/.test(r.input.error ?? ''), from);
    expect(malformed.input.error).toMatch(/patch\.portForwards\[0\]\.forward\.hostPorts\.end/);
    expect(await tcpOutcome(client, '198.51.100.1', 18082)).not.toMatch(/^got:/);

    // the right patch: one forward out, one in; only the one added is reported
    from = controller.reports.length;
    controller.pushPatch(6, patch);
    const report = await controller.waitForReport((r) => r.mutation === 'reportObjectStatus' && r.input.revision === 6, from);
    expect(report.input.objects).toEqual([{ objectType: 'PORT_FORWARD', objectId: '10000000-0000-4000-8000-000000000004', status: 'APPLIED', error: null }]);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18082), 10_000)).toBe('got:second service');
    expect(await tcpOutcome(client, '198.51.100.1', 18081)).not.toMatch(/^got:/);
  }, 60_000);
});
