/**
 * The agent's stats loop against a fake controller, no root needed: one report per interval with
 * the raw NIC counters, the host's boot id and a growing sequence; forward counters whose read
 * takes longer than the interval arrive less often, with the interval they really covered, while
 * the NIC counters keep coming every interval.
 */
import { readFileSync } from 'node:fs';
import type { DesiredState, StatsPart, StatsResult } from '@gatehouse/sdk';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { FakeController } from './fake-controller.js';
import { ScriptedDriver } from './scripted-driver.js';
import { startAgent } from './support.js';

const HOST_ID = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a03';
const NIC = '00000000-0000-4000-8000-0000000001a1';
const FORWARD = '10000000-0000-4000-8000-0000000000f1';
const STATS_MS = 200;
const FORWARD_READ_MS = 900;

const state: DesiredState = {
  apiVersion: 1,
  hostId: HOST_ID,
  hostName: 'stats',
  revision: 1,
  publicAddresses: ['198.51.100.1'],
  instances: [
    {
      id: '00000000-0000-4000-8000-0000000000a1',
      name: 'vm1',
      externalId: 'vm1',
      nics: [{ id: NIC, name: 'eth0', mac: '02:00:00:00:00:a1', network: 'br0', addresses: [] }],
      firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
      bandwidth: [],
      portForwards: [],
    },
  ],
};

/** The scripted driver, with counters that grow by 1000 bytes per NIC read and forward reads that take FORWARD_READ_MS. */
class CountingDriver extends ScriptedDriver {
  nicReads = 0;
  forwardReads = 0;
  override async stats(_ctx?: unknown, input?: { parts?: readonly StatsPart[] }): Promise<StatsResult> {
    const result: StatsResult = { nics: [], forwards: [] };
    if (input?.parts?.includes('nics')) {
      const n = ++this.nicReads;
      result.nics.push({
        instanceId: state.instances[0]!.id,
        nicId: NIC,
        rx: { bytes: n * 1000, packets: n },
        tx: { bytes: n * 10, packets: n },
        epoch: 'if7',
      });
    }
    if (input?.parts?.includes('forwards')) {
      await new Promise((r) => setTimeout(r, FORWARD_READ_MS));
      const n = ++this.forwardReads;
      result.forwards.push({ forwardId: FORWARD, counter: { bytes: n * 500, packets: n }, epoch: '12.13' });
    }
    return result;
  }
}

let controller: FakeController;
let agent: HostAgent;
const driver = new CountingDriver();

beforeAll(async () => {
  controller = await FakeController.start();
  agent = new HostAgent({
    controllerUrl: controller.url,
    token: 'unused',
    hostId: HOST_ID,
    driver,
    driftIntervalMs: 60_000,
    statsIntervalMs: STATS_MS,
    logger: { info() {}, warn() {}, error() {} },
  });
  await agent.start();
});
afterAll(async () => {
  await agent?.stop();
  await controller?.close();
});

it('reports raw NIC counters every interval and stretches the forward interval to what a slow read took', async () => {
  controller.push(1, state);
  const started = Date.now();
  await controller.waitForReport((r) => r.mutation === 'reportTraffic' && r.input.forwards != null);
  await new Promise((r) => setTimeout(r, 3000));
  const reports = controller.reports.filter((r) => r.mutation === 'reportTraffic').map((r) => r.input);
  const seconds = (Date.now() - started) / 1000;
  // about one report per interval (the machine is shared: at least half of them)
  expect(reports.length).toBeGreaterThan((seconds * 1000) / STATS_MS / 2);
  expect(reports.length).toBeLessThanOrEqual((seconds * 1000) / STATS_MS + 2);
  const sequences = reports.map((r) => r.sequence as number);
  expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
  expect(new Set(sequences).size).toBe(sequences.length);
  expect(reports.every((r) => r.hostId === HOST_ID && r.bootId === readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim())).toBe(true);
  // raw cumulative counters, as the driver read them
  const nicValues = reports.map((r) => r.nics.counters[0].rxBytes as number);
  expect(nicValues).toEqual([...nicValues].sort((a, b) => a - b));
  expect(reports[0]!.nics.counters[0]).toMatchObject({ nicId: NIC, epoch: 'if7', txBytes: nicValues[0]! / 100 });
  // forward readings: fewer than the NIC ones, each covering what its read really took
  const withForwards = reports.filter((r) => r.forwards);
  expect(withForwards.length).toBeGreaterThan(1);
  expect(withForwards.length).toBeLessThan(reports.length / 2);
  for (const r of withForwards.slice(1)) expect(r.forwards.intervalMs).toBeGreaterThanOrEqual(FORWARD_READ_MS);
  for (const r of reports.slice(1)) expect(r.nics.intervalMs).toBeLessThan(FORWARD_READ_MS);
  expect(withForwards.at(-1)!.forwards.counters[0]).toMatchObject({ forwardId: FORWARD, epoch: '12.13' });
});

it('refuses a --stats-interval below 100 ms on the command line, naming the option', async () => {
  const agentProcess = startAgent(['--controller', 'http://127.0.0.1:9/graphql', '--stats-interval', '50'], 'gh_unused');
  const code = await new Promise<number | null>((resolve) => agentProcess.child.once('exit', (c) => resolve(c)));
  expect(code).toBe(2);
  expect(agentProcess.output()).toContain('--stats-interval 50 must be 0 (no traffic reports) or an integer of at least 100 (ms)');
}, 60_000);
