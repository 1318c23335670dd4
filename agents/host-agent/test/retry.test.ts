/**
 * Retries never go back in time: an object of revision 4 failed and is to be retried, revision 5
 * arrives and takes longer to apply than the retry's backoff. The retry of 4 must not be applied
 * after 5 (it used to be, undoing 5 and cancelling 5's own retry — the faults suite's rare
 * "nft is back but nothing converges" failure). A scripted driver, no root needed.
 */
import { DRIVER_API_VERSION, expectedObservation, type ApplyResult, type DesiredState, type NetworkDriver } from '@gatehouse/sdk';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { FakeController } from './fake-controller.js';
import { ALL_CAPABILITIES } from './scripted-driver.js';

const HOST_ID = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a02';
const FORWARD = '10000000-0000-4000-8000-0000000000f1';

const state = (revision: number): DesiredState => ({
  apiVersion: 1,
  hostId: HOST_ID,
  hostName: 'retry',
  revision,
  publicAddresses: ['198.51.100.1'],
  instances: [
    {
      id: '00000000-0000-4000-8000-0000000000a1',
      name: 'vm1',
      externalId: 'vm1',
      nics: [],
      firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
      bandwidth: [],
      portForwards: [
        {
          id: FORWARD,
          protocol: 'tcp',
          hostAddress: null,
          hostPorts: { start: 18080 + revision, end: 18080 + revision },
          targetAddress: '10.0.0.2',
          targetPorts: { start: 80, end: 80 },
          sourceCidrs: [],
        },
      ],
    },
  ],
});

/** Applies revision 4 with its forward failing (retryable), and revision 5 slowly but fully. */
class ScriptedDriver implements NetworkDriver {
  readonly id = 'scripted';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly capabilities = ALL_CAPABILITIES;
  readonly applied: number[] = [];
  private current: DesiredState | undefined;

  async discover() {
    return { instances: [] };
  }
  async apply(_ctx: unknown, input: { desired: DesiredState }): Promise<ApplyResult> {
    const { revision } = input.desired;
    this.applied.push(revision);
    if (revision === 5) await new Promise((r) => setTimeout(r, 1500)); // longer than the 0.5 s first backoff
    this.current = input.desired;
    const failed = revision === 4;
    return {
      changed: true,
      objects: [
        failed
          ? { objectType: 'port_forward', objectId: FORWARD, status: 'failed', error: { code: 'TRANSIENT', message: 'not yet' } }
          : { objectType: 'port_forward', objectId: FORWARD, status: 'applied' },
      ],
    };
  }
  async observe() {
    return { state: expectedObservation(this.current ?? state(0)) };
  }
  async stats() {
    return { forwards: [], nics: [] };
  }
  async release() {
    return { released: true };
  }
  async gc() {
    return { removedInstanceIds: [] };
  }
}

let controller: FakeController;
let agent: HostAgent;
const driver = new ScriptedDriver();

beforeAll(async () => {
  controller = await FakeController.start();
  agent = new HostAgent({
    controllerUrl: controller.url,
    token: 'unused',
    hostId: HOST_ID,
    driver,
    driftIntervalMs: 60_000,
    logger: { info() {}, warn() {}, error() {} },
  });
  await agent.start();
});
afterAll(async () => {
  await agent?.stop();
  await controller?.close();
});

it('does not re-apply an older revision when its retry falls due while a newer one is being applied', async () => {
  controller.push(4, state(4));
  await controller.waitForReport((r) => r.mutation === 'reportObjectStatus' && r.input.revision === 4);
  // the retry of 4 is due in 0.5 s; 5 arrives now and takes 1.5 s
  controller.push(5, state(5));
  await controller.waitForReport((r) => r.mutation === 'reportObjectStatus' && r.input.revision === 5 && r.input.objects[0].status === 'APPLIED');
  await new Promise((r) => setTimeout(r, 2000));
  expect(driver.applied[0]).toBe(4);
  expect(driver.applied.slice(driver.applied.indexOf(5))).toEqual([5]);
  expect(controller.reports.filter((r) => r.mutation === 'reportHostStatus').at(-1)?.input.appliedRevision).toBe(5);
});
