/**
 * The agent uses the whole driver contract: `release` once per instance that leaves the desired
 * state, `gc` with the document's instance ids after the first apply and periodically, retries
 * only what may pass (a retryable failure backs off and tries again, a non-retryable one waits
 * for a new revision), reports NIC results and its driver's capabilities, and hands the driver
 * nothing its capabilities exclude (reported FAILED instead). A scripted driver, no root needed.
 */
import { diffDesiredState } from '@gatehouse/agent-protocol';
import { ConflictError, type DesiredInstance, type DesiredState, type DriverContext } from '@gatehouse/sdk';
import { afterEach, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { FakeController, type Report } from './fake-controller.js';
import { ALL_CAPABILITIES, ScriptedDriver } from './scripted-driver.js';

const HOST_ID = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a03';
const id = (kind: string, n: number) => `${kind}0000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

const instance = (n: number, extra: Partial<DesiredInstance> = {}): DesiredInstance => ({
  id: id('a', n),
  name: `vm${n}`,
  externalId: `vm${n}`,
  nics: [{ id: id('b', n), name: 'eth0', mac: `02:00:00:00:00:${String(n).padStart(2, '0')}`, network: 'br0', addresses: [] }],
  firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
  bandwidth: [],
  portForwards: [
    {
      id: id('c', n),
      protocol: 'tcp',
      hostAddress: null,
      hostPorts: { start: 20000 + n, end: 20000 + n },
      targetAddress: `10.0.0.${n}`,
      targetPorts: { start: 80, end: 80 },
      sourceCidrs: [],
    },
  ],
  ...extra,
});

const state = (revision: number, instances: DesiredInstance[]): DesiredState => ({
  apiVersion: 1,
  hostId: HOST_ID,
  hostName: 'contract',
  revision,
  publicAddresses: ['198.51.100.1'],
  instances,
});

const running: { agent: HostAgent; controller: FakeController }[] = [];

/** Starts an agent with `driver` on a new fake controller (drift checks and gc every 10 minutes unless given); the controller. */
async function start(driver: ScriptedDriver, options: { gcIntervalMs?: number; driftIntervalMs?: number; warnings?: string[] } = {}) {
  const controller = await FakeController.start();
  const agent = new HostAgent({
    controllerUrl: controller.url,
    token: 'unused',
    hostId: HOST_ID,
    driver,
    driftIntervalMs: options.driftIntervalMs ?? 600_000,
    gcIntervalMs: options.gcIntervalMs ?? 600_000,
    logger: { info() {}, warn: (m) => void options.warnings?.push(m), error() {} },
  });
  await agent.start();
  running.push({ agent, controller });
  return controller;
}

afterEach(async () => {
  for (const { agent, controller } of running.splice(0)) {
    await agent.stop();
    await controller.close();
  }
});

const objectReport = (revision: number) => (r: Report) => r.mutation === 'reportObjectStatus' && r.input.revision === revision;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Polls `probe` every 20 ms until it holds, for at most 15 s (the assertion after it says what failed). */
async function until(probe: () => boolean): Promise<void> {
  for (const end = Date.now() + 15_000; !probe() && Date.now() < end;) await sleep(20);
}

it('releases each instance that left the desired state, once', async () => {
  const driver = new ScriptedDriver();
  const controller = await start(driver);
  controller.push(1, state(1, [instance(1), instance(2), instance(3)]));
  await controller.waitForReport(objectReport(1));
  expect(driver.callsOf('release')).toEqual([]);
  controller.push(2, state(2, [instance(1)]));
  await controller.waitForReport(objectReport(2));
  controller.push(3, state(3, [instance(1), instance(4)]));
  await controller.waitForReport(objectReport(3));
  await sleep(200);
  expect(driver.callsOf('release').map((c) => c.instanceId)).toEqual([id('a', 2), id('a', 3)]);
});

it('runs gc with the valid instance ids after the first apply, and periodically', async () => {
  const driver = new ScriptedDriver();
  const controller = await start(driver, { gcIntervalMs: 400 });
  await sleep(600);
  expect(driver.callsOf('gc')).toEqual([]); // nothing applied yet: nothing is known to be valid
  controller.push(1, state(1, [instance(1), instance(2)]));
  await controller.waitForReport(objectReport(1));
  // the first gc follows the apply (not a timer): wait for it rather than a fixed time, which a loaded machine overruns
  await until(() => driver.callsOf('gc').length >= 1);
  expect(driver.callsOf('gc')[0]).toEqual({ method: 'gc', validInstanceIds: [id('a', 1), id('a', 2)] });
  controller.push(2, state(2, [instance(2)]));
  await controller.waitForReport(objectReport(2));
  // no further apply calls gc: a later call with the new document's ids comes from the 400 ms timer
  const afterApply = driver.callsOf('gc').length;
  await until(() =>
    driver
      .callsOf('gc')
      .slice(afterApply)
      .some((c) => c.validInstanceIds.length === 1),
  );
  const later = driver.callsOf('gc').slice(afterApply);
  expect(later.length).toBeGreaterThanOrEqual(1);
  expect(later.at(-1)!.validInstanceIds).toEqual([id('a', 2)]);
});

it('retries an object whose failure is retryable, and not one whose failure is not', async () => {
  const retryable = new ScriptedDriver();
  retryable.outcome = (objectId) => (objectId === id('c', 1) ? { code: 'TRANSIENT', message: 'not yet' } : undefined);
  const c1 = await start(retryable);
  c1.push(1, state(1, [instance(1)]));
  const fatal = new ScriptedDriver();
  fatal.outcome = (objectId) => (objectId === id('c', 1) ? new ConflictError('port 20001 is taken by something else').toJSON() : undefined);
  const c2 = await start(fatal);
  c2.push(1, state(1, [instance(1)]));
  await c1.waitForReport(objectReport(1));
  await c2.waitForReport(objectReport(1));
  await sleep(2000); // the first retries fall due after 0.5 s, then 1 s
  expect(retryable.callsOf('apply').length).toBeGreaterThanOrEqual(2);
  expect(fatal.callsOf('apply')).toHaveLength(1);
  // a new revision is applied (and its failure again waits)
  c2.push(2, state(2, [instance(1)]));
  await c2.waitForReport(objectReport(2));
  expect(fatal.callsOf('apply').map((c) => c.desired.revision)).toEqual([1, 2]);
});

it('does not retry an apply that threw a non-retryable error, and does retry a retryable one', async () => {
  const fatal = new ScriptedDriver();
  fatal.throwing = (revision) => (revision === 1 ? new ConflictError('the table belongs to someone else') : undefined);
  const c1 = await start(fatal);
  c1.push(1, state(1, [instance(1)]));
  const flaky = new ScriptedDriver();
  flaky.throwing = () => new Error('socket hang up'); // anything unknown may pass: retried
  const c2 = await start(flaky);
  c2.push(1, state(1, [instance(1)]));
  await c1.waitForReport((r) => r.mutation === 'reportHostStatus' && /CONFLICT/.test(r.input.error ?? ''));
  await sleep(2000);
  expect(fatal.callsOf('apply')).toHaveLength(1);
  expect(flaky.callsOf('apply').length).toBeGreaterThanOrEqual(2);
  c1.push(2, state(2, [instance(1)]));
  await c1.waitForReport(objectReport(2));
});

it('reports NIC results and its driver with capabilities', async () => {
  const driver = new ScriptedDriver();
  const controller = await start(driver);
  controller.push(1, state(1, [instance(1)]));
  const objects = await controller.waitForReport(objectReport(1));
  expect(objects.input.objects).toContainEqual({ objectType: 'NIC', objectId: id('b', 1), status: 'APPLIED', error: null });
  const host = await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 1);
  expect(host.input.driver).toEqual({ id: 'scripted', version: '9.9.9', apiVersion: 1, capabilities: ALL_CAPABILITIES });
});

it('hands the driver nothing its capabilities exclude, and reports those objects FAILED with CAPABILITY_NOT_SUPPORTED', async () => {
  const driver = new ScriptedDriver({ ...ALL_CAPABILITIES, portForwards: { ...ALL_CAPABILITIES.portForwards!, ipv6: false } });
  const controller = await start(driver);
  const v6 = instance(2);
  v6.portForwards[0]!.targetAddress = 'fd00::2';
  controller.push(1, state(1, [instance(1), v6]));
  const report = await controller.waitForReport(objectReport(1));
  const applied = driver.callsOf('apply')[0]!.desired;
  expect(applied.instances.flatMap((i) => i.portForwards.map((f) => f.id))).toEqual([id('c', 1)]);
  const failed = report.input.objects.find((o: { objectId: string }) => o.objectId === id('c', 2));
  expect(failed).toMatchObject({ objectType: 'PORT_FORWARD', status: 'FAILED' });
  expect(failed.error).toBe('CAPABILITY_NOT_SUPPORTED: its driver scripted does not support IPv6 port forwards (capabilities.portForwards.ipv6)');
  await sleep(1200);
  expect(driver.callsOf('apply')).toHaveLength(1); // not retried: it cannot pass
});

it('runs one drift check at a time when a check takes longer than the interval', async () => {
  let inFlight = 0;
  let most = 0;
  let checks = 0;
  class SlowObserver extends ScriptedDriver {
    override async observe() {
      checks++;
      most = Math.max(most, ++inFlight);
      await sleep(300);
      inFlight--;
      return super.observe();
    }
  }
  const driver = new SlowObserver();
  const controller = await start(driver, { driftIntervalMs: 20 });
  controller.push(1, state(1, [instance(1)]));
  await controller.waitForReport(objectReport(1));
  await until(() => checks >= 3);
  expect(checks).toBeGreaterThanOrEqual(3);
  expect(most).toBe(1);
});

it('reports an object the documents did not change only when its status changes, and one that went and came back again', async () => {
  const driver = new ScriptedDriver();
  driver.outcome = (objectId, revision) =>
    objectId === id('c', 1) && revision === 2 ? new ConflictError('port 20001 is taken by something else').toJSON() : undefined;
  const controller = await start(driver);
  const retargeted = (n: number, port: number) => instance(n, { portForwards: [{ ...instance(n).portForwards[0]!, targetPorts: { start: port, end: port } }] });
  const docs = [
    state(1, [instance(1), instance(2)]),
    state(2, [instance(1), retargeted(2, 81)]),
    state(3, [instance(1), retargeted(2, 82)]),
    state(4, [instance(1), instance(2, { portForwards: [] })]),
    state(5, [instance(1), retargeted(2, 82)]),
  ];
  controller.push(1, docs[0]);
  expect((await controller.waitForReport(objectReport(1))).input.objects).toHaveLength(4);
  const reported = async (revision: number) => {
    controller.pushPatch(revision, diffDesiredState(docs[revision - 2]!, docs[revision - 1]!));
    const objects = (await controller.waitForReport(objectReport(revision))).input.objects as { objectId: string; status: string }[];
    return Object.fromEntries(objects.map((o) => [o.objectId, o.status]));
  };
  // the changed forward, and the unchanged one whose apply failed
  expect(await reported(2)).toEqual({ [id('c', 2)]: 'APPLIED', [id('c', 1)]: 'FAILED' });
  // ... which applies again
  expect(await reported(3)).toEqual({ [id('c', 2)]: 'APPLIED', [id('c', 1)]: 'APPLIED' });
  // a forward that went and came back is reported again
  await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 3);
  controller.pushPatch(4, diffDesiredState(docs[2]!, docs[3]!));
  await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 4);
  expect(controller.reports.some(objectReport(4))).toBe(false);
  expect(await reported(5)).toEqual({ [id('c', 2)]: 'APPLIED' });
});

it('stops a drift check under way when a revision arrives, and applies that revision without waiting for the check', async () => {
  const stopped: unknown[] = [];
  let checking = false;
  class SlowDrift extends ScriptedDriver {
    async drift(ctx: DriverContext) {
      checking = true;
      // a listing of a large table: ends when stopped, else after 20 s
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 20_000);
        ctx.signal.addEventListener('abort', () => {
          stopped.push(ctx.signal.reason);
          clearTimeout(timer);
          resolve();
        });
      });
      checking = false;
      if (ctx.signal.aborted) throw ctx.signal.reason;
      return { differences: [] };
    }
  }
  const driver = new SlowDrift();
  const warnings: string[] = [];
  const controller = await start(driver, { driftIntervalMs: 50, warnings });
  controller.push(1, state(1, [instance(1)]));
  await controller.waitForReport(objectReport(1));
  await until(() => checking);
  expect(checking).toBe(true);
  const sent = Date.now();
  controller.pushPatch(2, diffDesiredState(state(1, [instance(1)]), state(2, [instance(1), instance(2)])));
  await controller.waitForReport(objectReport(2));
  expect(Date.now() - sent).toBeLessThan(5_000);
  expect(stopped).toHaveLength(1);
  expect(warnings.filter((w) => /drift check failed/.test(w))).toEqual([]);
});

it('rests four times as long as a drift check took before the next one', async () => {
  const starts: number[] = [];
  class SlowObserver extends ScriptedDriver {
    override async observe() {
      starts.push(Date.now());
      await sleep(200);
      return super.observe();
    }
  }
  const controller = await start(new SlowObserver(), { driftIntervalMs: 20 });
  controller.push(1, state(1, [instance(1)]));
  await controller.waitForReport(objectReport(1));
  await until(() => starts.length >= 3);
  const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
  // each check: 200 ms, then a rest of 800 ms (with a tick of 20 ms): about a second apart, not 220 ms
  expect(Math.min(...gaps)).toBeGreaterThanOrEqual(950);
});
