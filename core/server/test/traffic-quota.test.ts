/**
 * Monthly traffic quotas on both stores, with reports sent as an agent sends them: 80 % and 100 %
 * reached (audit entries and `trafficQuotaChanged` events, owners their own, admins all), THROTTLE
 * putting the throttle rate into the host's desired state on every NIC in both directions while
 * NOTIFY only marks it, a restarted controller keeping the throttle without announcing it again,
 * and the next billing period (the injectable clock moved) lifting it by itself.
 */
import { REPORT_TRAFFIC_MUTATION, type NicTrafficInput } from '@gatehouse/agent-protocol';
import type { DesiredState } from '@gatehouse/sdk';
import type { Client as WsClient } from 'graphql-ws';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoreConfig } from '../src/db/database.js';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type GqlResponse } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { TrafficQuota, quotaLevel } from '../src/traffic/traffic-quota.js';
import { agentSecret, instanceIdsByName, watchWs } from './support/traffic.js';

const backends = await storeBackends();
const MB = 1_000_000;

const SET = `mutation($input: SetBandwidthLimitInput!) { setBandwidthLimit(input: $input) { __typename ... on SetBandwidthLimitPayload { limit { id } } ${ERROR_FIELDS} } }`;
const PERIOD = `query($id: ID!) { instance(id: $id) { traffic { period { totalBytes quotaBytes quotaUsed quotaState throttled start } } } }`;
const CHANGE = `limitId instanceId nicId level previousLevel throttled throttleMbps usedBytes quotaBytes periodStart periodEnd`;

interface Change {
  limitId: string;
  instanceId: string;
  level: string;
  previousLevel: string;
  throttled: boolean;
  throttleMbps: number | null;
  usedBytes: number;
  quotaBytes: number;
}

it('gives the levels at 80 % and 100 %', () => {
  expect(quotaLevel(799_999, MB)).toBe('normal');
  expect(quotaLevel(800_000, MB)).toBe('warning');
  expect(quotaLevel(MB, MB)).toBe('exceeded');
  expect(quotaLevel(5 * MB, null)).toBe('normal');
});

describe.each(backends)('traffic quotas on $name', (backend) => {
  let controller: Controller;
  let config: StoreConfig;
  let cleanup: () => Promise<void>;
  let dataDir: string | undefined;
  let now = Date.parse('2026-05-30T12:00:00Z');
  const clock = { now: () => new Date(now) };
  let agent: Client;
  let admin: Client;
  let adminSecret: string;
  let hostId: string;
  let tenantA: { client: Client; id: string; secret: string };
  let tenantB: { client: Client; id: string; secret: string };
  let vmA: string;
  let nicsA: string[];
  let vmB: string;
  let nicB: string;
  let limitA: string;
  let sequence = 1;
  const counters = new Map<string, number>();
  const clients: WsClient[] = [];

  async function start(): Promise<void> {
    controller = await startController({ store: config, port: 0, bootstrap: false, clock });
  }

  /** A client over HTTP to the controller running now (it outlives a restart). */
  const http =
    (secret: string): Client =>
    async (query, variables) => {
      const response = await fetch(controller.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()) as GqlResponse;
    };

  beforeAll(async () => {
    const opened = await backend.open();
    if (backend.name === 'pglite') {
      // on disk, so the controller can be restarted on it
      await opened.cleanup();
      dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-quota-'));
      config = { kind: 'pglite', dataDir };
      cleanup = async () => rmSync(dataDir!, { recursive: true, force: true });
    } else {
      config = opened.config;
      cleanup = opened.cleanup;
    }
    await start();
    const api = await createTestApi(controller.store, controller.container);
    admin = http(api.adminSecret);
    adminSecret = api.adminSecret;
    hostId = await createHost(api.admin, 'q-host');
    tenantA = await api.tenant('q-alice');
    tenantA.client = http(tenantA.secret);
    tenantB = await api.tenant('q-bob');
    tenantB.client = http(tenantB.secret);
    nicsA = await createNics(api.admin, hostId, tenantA.id, 'vm-a', 'br0', 2);
    nicB = (await createNics(api.admin, hostId, tenantB.id, 'vm-b', 'br0', 1))[0]!;
    const instances = await instanceIdsByName(api.admin);
    vmA = instances.get('vm-a')!;
    vmB = instances.get('vm-b')!;
    agent = http(await agentSecret(api.admin, hostId));
    // the first reading of a counter is where it starts: later ones count from it
    await traffic({ [nicsA[0]!]: 0, [nicsA[1]!]: 0, [nicB]: 0 });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
    await cleanup?.();
  });

  /** Reports that each NIC's counter grew by `bytes` (half in, half out) over a second. */
  async function traffic(grow: Record<string, number>): Promise<void> {
    now += 1000;
    const list: NicTrafficInput[] = Object.entries(grow).map(([nicId, bytes]) => {
      const total = (counters.get(nicId) ?? 0) + bytes;
      counters.set(nicId, total);
      return { nicId, epoch: 'if3', rxBytes: total / 2, rxPackets: total / 1000, txBytes: total / 2, txPackets: total / 1000 };
    });
    const r = await agent(REPORT_TRAFFIC_MUTATION.replace('... on Error { message }', ERROR_FIELDS), {
      input: { hostId, bootId: 'boot-q', sequence: ++sequence, nics: { at: new Date(now).toISOString(), intervalMs: 1000, counters: list } },
    });
    expect(r.errors).toBeUndefined();
    expect(r.data.reportTraffic.outcome.rejected).toEqual([]);
  }

  const watch = (secret: string, variables: Record<string, unknown> = {}): Change[] =>
    watchWs<Change>({
      url: controller.url,
      secret,
      query: `subscription($ids: [ID!]) { trafficQuotaChanged(instanceIds: $ids) { ${CHANGE} } }`,
      variables,
      field: 'trafficQuotaChanged',
      clients,
    }).seen;

  async function settle(seen: Change[], count: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (seen.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }

  async function desired(): Promise<DesiredState> {
    const r = await admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: hostId });
    expect(r.errors).toBeUndefined();
    return r.data.hostDesiredState.document as DesiredState;
  }
  const bandwidthOf = async (instanceId: string) => (await desired()).instances.find((i) => i.id === instanceId)!.bandwidth;

  async function quotaEntries(): Promise<{ action: string; objectId: string }[]> {
    const r = await admin(`{ auditLog(first: 100) { edges { node { action objectId } } } }`);
    expect(r.errors).toBeUndefined();
    return r.data.auditLog.edges
      .map((e: { node: { action: string; objectId: string } }) => e.node)
      .filter((e: { action: string }) => e.action.startsWith('traffic.quota.'));
  }

  it('warns at 80 %, throttles every NIC in both directions at 100 % (THROTTLE), and only marks it with NOTIFY', async () => {
    const setA = await tenantA.client(SET, {
      input: { instanceId: vmA, egressMbps: 100, monthlyQuotaGb: 0.01, quotaAction: 'THROTTLE', throttleMbps: 2 },
    });
    expect(setA.data.setBandwidthLimit.__typename).toBe('SetBandwidthLimitPayload');
    limitA = setA.data.setBandwidthLimit.limit.id;
    const setB = await tenantB.client(SET, { input: { instanceId: vmB, ingressMbps: 50, monthlyQuotaGb: 0.001, quotaAction: 'NOTIFY' } });
    expect(setB.data.setBandwidthLimit.__typename).toBe('SetBandwidthLimitPayload');
    const limitB = setB.data.setBandwidthLimit.limit.id;
    const revision = (await desired()).revision;

    const alice = watch(tenantA.secret);
    const bobAsksForAlice = watch(tenantB.secret, { ids: [vmA] });
    const bob = watch(tenantB.secret);
    const everything = watch(adminSecret);
    await new Promise((r) => setTimeout(r, 300));

    // 7 MB over both NICs: under 80 % of 10 MB
    await traffic({ [nicsA[0]!]: 4 * MB, [nicsA[1]!]: 3 * MB });
    expect((await tenantA.client(PERIOD, { id: vmA })).data.instance.traffic.period).toMatchObject({
      totalBytes: 7 * MB,
      quotaState: 'NORMAL',
      throttled: false,
    });
    // 8.5 MB: a warning, nothing throttled
    await traffic({ [nicsA[0]!]: 1.5 * MB });
    await settle(alice, 1);
    expect(alice).toMatchObject([{ limitId: limitA, instanceId: vmA, level: 'WARNING', previousLevel: 'NORMAL', throttled: false, usedBytes: 8.5 * MB }]);
    expect((await desired()).revision).toBe(revision);
    // 10.5 MB: exceeded; the throttle goes into the desired state
    await traffic({ [nicsA[1]!]: 2 * MB });
    await settle(alice, 2);
    expect(alice[1]).toMatchObject({
      level: 'EXCEEDED',
      previousLevel: 'WARNING',
      throttled: true,
      throttleMbps: 2,
      usedBytes: 10.5 * MB,
      quotaBytes: 10 * MB,
    });
    expect((await tenantA.client(PERIOD, { id: vmA })).data.instance.traffic.period).toMatchObject({ quotaState: 'EXCEEDED', throttled: true });
    const state = await desired();
    expect(state.revision).toBeGreaterThan(revision);
    // the instance-wide limit covers every NIC: both directions at 2 Mbit/s
    expect(state.instances.find((i) => i.id === vmA)!.bandwidth).toMatchObject([{ id: limitA, nicId: null, ingressBps: 2e6, egressBps: 2e6 }]);
    const limits = await tenantA.client(`query($id: ID!) { instance(id: $id) { bandwidth { egressMbps status } } }`, { id: vmA });
    expect(limits.data.instance.bandwidth).toEqual([{ egressMbps: 100, status: 'PENDING' }]);

    // NOTIFY: exceeded is marked and announced, the rate stays
    await traffic({ [nicB]: 1.2 * MB });
    await settle(bob, 1);
    expect(bob).toMatchObject([{ limitId: limitB, instanceId: vmB, level: 'EXCEEDED', previousLevel: 'NORMAL', throttled: false, throttleMbps: null }]);
    expect(await bandwidthOf(vmB)).toMatchObject([{ ingressBps: 50e6, egressBps: null }]);
    expect((await tenantB.client(PERIOD, { id: vmB })).data.instance.traffic.period).toMatchObject({ quotaState: 'EXCEEDED', throttled: false });

    // more traffic changes nothing more; owners saw their own, the admin all
    await traffic({ [nicsA[0]!]: MB, [nicB]: MB });
    await settle(everything, 3);
    await new Promise((r) => setTimeout(r, 200));
    expect(everything.map((c) => [c.instanceId, c.level])).toEqual([
      [vmA, 'WARNING'],
      [vmA, 'EXCEEDED'],
      [vmB, 'EXCEEDED'],
    ]);
    expect(alice).toHaveLength(2);
    expect(bobAsksForAlice).toEqual([]);
    expect(await quotaEntries()).toEqual([
      { action: 'traffic.quota.exceeded', objectId: limitB },
      { action: 'traffic.quota.exceeded', objectId: limitA },
      { action: 'traffic.quota.warning', objectId: limitA },
    ]);
  });

  it('keeps the throttle across a controller restart, without announcing it again', async () => {
    const before = await desired();
    await Promise.all(clients.splice(0).map((c) => c.dispose()));
    await controller.close();
    await start();
    expect(await desired()).toEqual(before);
    expect(await controller.container.resolve(TrafficQuota).check()).toEqual([]);
    await traffic({ [nicsA[0]!]: MB });
    expect(await desired()).toEqual(before);
    expect(await quotaEntries()).toHaveLength(3);
    expect((await tenantA.client(PERIOD, { id: vmA })).data.instance.traffic.period).toMatchObject({ quotaState: 'EXCEEDED', throttled: true });
  });

  it('lifts the throttle when the next billing period starts, by itself', async () => {
    const alice = watch(tenantA.secret);
    await new Promise((r) => setTimeout(r, 300));
    const before = await desired();
    now = Date.parse('2026-06-01T00:00:05Z');
    // until the check lifts it, the throttle is still in force, and the period says so (the new period's level is NORMAL)
    expect((await tenantA.client(PERIOD, { id: vmA })).data.instance.traffic.period).toMatchObject({
      totalBytes: 0,
      quotaState: 'NORMAL',
      throttled: true,
      start: '2026-06-01T00:00:00.000Z',
    });
    expect(await desired()).toEqual(before);
    // what the controller's timer does every 10 s
    const changes = await controller.container.resolve(TrafficQuota).check();
    expect(changes.map((c) => [c.instanceId, c.level, c.previousLevel, c.throttled])).toEqual(
      expect.arrayContaining([
        [vmA, 'normal', 'exceeded', false],
        [vmB, 'normal', 'exceeded', false],
      ]),
    );
    await settle(alice, 1);
    expect(alice).toMatchObject([{ limitId: limitA, level: 'NORMAL', previousLevel: 'EXCEEDED', throttled: false, usedBytes: 0 }]);
    const after = await desired();
    expect(after.revision).toBeGreaterThan(before.revision);
    // back to the configured limit: 100 Mbit/s out, nothing in
    expect(after.instances.find((i) => i.id === vmA)!.bandwidth).toMatchObject([{ id: limitA, ingressBps: null, egressBps: 100e6 }]);
    const period = (await tenantA.client(PERIOD, { id: vmA })).data.instance.traffic.period;
    expect(period).toMatchObject({ totalBytes: 0, quotaState: 'NORMAL', throttled: false, start: '2026-06-01T00:00:00.000Z' });
    // a second check in the new period changes nothing
    expect(await controller.container.resolve(TrafficQuota).check()).toEqual([]);
    expect((await quotaEntries()).filter((e) => e.action === 'traffic.quota.normal')).toHaveLength(2);
  });
});
