/**
 * Traffic statistics through the API on both stores, with reports sent as an agent sends them (its
 * own GraphQL document and AGENT token): exact period totals across replays and resets, refused
 * reports that store nothing, counters of other hosts and unknown ids left out while the rest
 * counts, history curves before and after rollups, billing-period roll-over with the injectable
 * clock, live rates, and tenancy in queries and in the `trafficUpdated` subscription.
 */
import { REPORT_TRAFFIC_MUTATION, type NicTrafficInput, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { TrafficHistory } from '../src/traffic/traffic-history.js';
import { TrafficLive } from '../src/traffic/traffic-live.js';
import { agentSecret, instanceIdsByName, watchWs } from './support/traffic.js';

const backends = await storeBackends();

const PERIOD = `rxBytes txBytes totalBytes p95Bps rxP95Bps quotaBytes quotaUsed projectedTotalBytes start end`;
const INSTANCE_TRAFFIC = `query($id: ID!, $offset: Int) { instance(id: $id) { traffic { live { rxBps txBps at } period(offset: $offset) { ${PERIOD} } }
  nics { id traffic { period { rxBytes txBytes } } } } }`;
const HISTORY = `query($id: ID!, $range: TrafficRange!) { instance(id: $id) { traffic { history(range: $range) { at rxBytes txBytes rxBps txBps } } } }`;

describe.each(backends)('traffic statistics on $name', (backend) => {
  let controller: Controller;
  let api: TestApi;
  let cleanup: () => Promise<void>;
  let now = Date.parse('2026-03-31T23:50:00Z');
  const clock = { now: () => new Date(now) };
  let agent: Client;
  let hostId: string;
  let otherHostNic: string;
  let tenantA: { client: Client; id: string; secret: string };
  let tenantB: { client: Client; id: string; secret: string };
  let vmA: string;
  let nicsA: string[];
  let nicB: string;
  let vmB: string;
  let sequence = 100;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    controller = await startController({ store: opened.config, port: 0, bootstrap: false, clock });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'tr-host');
    const otherHost = await createHost(api.admin, 'tr-other');
    tenantA = await api.tenant('tr-alice');
    tenantB = await api.tenant('tr-bob');
    nicsA = await createNics(api.admin, hostId, tenantA.id, 'vm-a', 'br0', 2);
    nicB = (await createNics(api.admin, hostId, tenantB.id, 'vm-b', 'br0', 1))[0]!;
    otherHostNic = (await createNics(api.admin, otherHost, tenantA.id, 'vm-c', 'br0', 1))[0]!;
    const instances = await instanceIdsByName(api.admin);
    vmA = instances.get('vm-a')!;
    vmB = instances.get('vm-b')!;
    agent = api.clientFor(await agentSecret(api.admin, hostId));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
    await cleanup?.();
  });

  const nic = (nicId: string, rx: number, tx: number, epoch = 'if7'): NicTrafficInput => ({
    nicId,
    epoch,
    rxBytes: rx,
    rxPackets: Math.ceil(rx / 1000),
    txBytes: tx,
    txPackets: Math.ceil(tx / 1000),
  });

  function report(counters: NicTrafficInput[], extra: Partial<ReportTrafficInput> = {}): ReportTrafficInput {
    return {
      hostId,
      bootId: 'boot-1',
      sequence: ++sequence,
      nics: { at: new Date(now).toISOString(), intervalMs: 1000, counters },
      ...extra,
    };
  }

  /** Sends a report with the agent's own document and token; returns the payload or the error. */
  async function send(input: ReportTrafficInput, client = agent) {
    const r = await client(REPORT_TRAFFIC_MUTATION.replace('... on Error { message }', ERROR_FIELDS), { input });
    expect(r.errors).toBeUndefined();
    return r.data.reportTraffic;
  }

  async function periodOf(client: Client, id: string, offset = 0) {
    const r = await client(INSTANCE_TRAFFIC, { id, offset });
    expect(r.errors).toBeUndefined();
    return r.data.instance?.traffic;
  }

  it('counts deltas from the first report on, and a replayed report adds nothing', async () => {
    expect((await send(report([nic(nicsA[0]!, 50_000, 7000), nic(nicsA[1]!, 1000, 1000), nic(nicB, 0, 0)]))).outcome.counted).toBe(3);
    now += 1000;
    const second = report([nic(nicsA[0]!, 150_000, 27_000), nic(nicsA[1]!, 4000, 1500), nic(nicB, 10, 20)]);
    expect((await send(second)).outcome).toEqual({ counted: 3, rejected: [] });
    // the same report again (a retried mutation), and an older one arriving late
    await send(second);
    await send({ ...report([nic(nicsA[0]!, 120_000, 20_000)]), sequence: second.sequence - 1 });
    const traffic = await periodOf(tenantA.client, vmA);
    expect(traffic.period).toMatchObject({ rxBytes: 100_000 + 3000, txBytes: 20_000 + 500, totalBytes: 123_500 });
    expect(traffic.live.rxBps).toBe(103_000 * 8);
    const perNic = Object.fromEntries(
      (await tenantA.client(INSTANCE_TRAFFIC, { id: vmA })).data.instance.nics.map((n: { id: string; traffic: { period: unknown } }) => [
        n.id,
        n.traffic.period,
      ]),
    );
    expect(perNic[nicsA[0]!]).toEqual({ rxBytes: 100_000, txBytes: 20_000 });
    expect(perNic[nicsA[1]!]).toEqual({ rxBytes: 3000, txBytes: 500 });
  });

  it('counts a reset by value and by epoch from zero, and discards an impossible delta', async () => {
    now += 1000;
    // nic 0's interface was re-created (new ifindex): its new value is new traffic; nic 1's counter went backwards
    await send(report([nic(nicsA[0]!, 2000, 100, 'if9'), nic(nicsA[1]!, 500, 200)]));
    now += 1000;
    // 10 TB in one second on nic 1: over 100 Gbit/s, discarded
    await send(report([nic(nicsA[0]!, 3000, 100, 'if9'), nic(nicsA[1]!, 10e12, 300)]));
    now += 1000;
    await send(report([nic(nicsA[0]!, 3000, 100, 'if9'), nic(nicsA[1]!, 10e12 + 100, 300)]));
    const traffic = await periodOf(tenantA.client, vmA);
    expect(traffic.period.rxBytes).toBe(103_000 + 2000 + 500 + 1000 + 100);
    expect(traffic.period.txBytes).toBe(20_500 + 100 + 200);
  });

  it('refuses a report as a whole (future time, too many counters, another host) and stores nothing', async () => {
    const before = (await periodOf(api.admin, vmA)).period;
    const future = await send({
      ...report([nic(nicsA[0]!, 9e6, 9e6, 'if9')]),
      nics: { at: new Date(now + 3_600_000).toISOString(), intervalMs: 1000, counters: [nic(nicsA[0]!, 9e6, 9e6, 'if9')] },
    });
    expect(future).toMatchObject({ __typename: 'ValidationError', field: 'input.nics.at' });
    const many = Array.from({ length: 20_001 }, () => nic(nicsA[0]!, 9e6, 9e6, 'if9'));
    expect(await send(report(many))).toMatchObject({ __typename: 'ValidationError', field: 'input.nics.counters' });
    const otherHost = (await api.admin('{ hosts { edges { node { id name } } } }')).data.hosts.edges.find(
      (e: { node: { name: string } }) => e.node.name === 'tr-other',
    ).node.id;
    expect(await send({ ...report([nic(otherHostNic, 1, 1)]), hostId: otherHost })).toMatchObject({ __typename: 'ForbiddenError', field: 'input.hostId' });
    expect((await periodOf(api.admin, vmA)).period).toEqual(before);
  });

  it('leaves out bad counters, naming their field, and counts the others', async () => {
    now += 1000;
    const result = await send(
      report([
        nic(nicsA[0]!, 4000, 100, 'if9'),
        { ...nic(nicsA[1]!, 10e12 + 200, 300), txBytes: -5 },
        nic(otherHostNic, 5000, 5000),
        nic('0190a0a0-0000-7000-8000-000000000000', 1, 1),
        { ...nic(nicB, 30, 40), rxBytes: 1.5 },
      ]),
    );
    expect(result.outcome.counted).toBe(1);
    expect(result.outcome.rejected.map((r: { field: string }) => r.field)).toEqual([
      'input.nics.counters[1].txBytes',
      'input.nics.counters[4].rxBytes',
      'input.nics.counters[2].nicId',
      'input.nics.counters[3].nicId',
    ]);
    expect(result.outcome.rejected[2].message).toContain('belongs to another host');
    const traffic = await periodOf(tenantA.client, vmA);
    expect(traffic.period.rxBytes).toBe(106_600 + 1000);
  });

  it('gives the same totals in the history curves before and after rollups', async () => {
    const total = (await periodOf(api.admin, vmA)).period;
    const sum = async (range: string) => {
      const points = (await api.admin(HISTORY, { id: vmA, range })).data.instance.traffic.history as { rxBytes: number; txBytes: number }[];
      return [points.length, points.reduce((s, p) => s + p.rxBytes, 0), points.reduce((s, p) => s + p.txBytes, 0)];
    };
    expect(await sum('LAST_HOUR')).toEqual([60, total.rxBytes, total.txBytes]);
    expect(await sum('LAST_7D')).toEqual([168, total.rxBytes, total.txBytes]);
    const history = controller.container.resolve(TrafficHistory);
    now += 120_000;
    await history.maintain();
    await history.maintain(); // a second round adds nothing twice
    for (const [range, points] of [
      ['LAST_HOUR', 60],
      ['LAST_24H', 288],
      ['LAST_7D', 168],
      ['LAST_30D', 30],
    ] as const)
      expect(await sum(range)).toEqual([points, total.rxBytes, total.txBytes]);
    // all of it fell in one 5-minute interval of the period so far
    const samples = Math.ceil((now - Date.parse('2026-03-01T00:00:00Z')) / 300_000);
    expect(samples).toBeGreaterThan(20);
    expect(total.p95Bps).toBe(0);
  });

  it('starts a new billing period at the month boundary, keeping the old one', async () => {
    const march = (await periodOf(api.admin, vmA)).period;
    expect(march.start).toBe('2026-03-01T00:00:00.000Z');
    now = Date.parse('2026-04-01T00:00:30Z');
    await send(report([nic(nicsA[0]!, 9000, 600, 'if9'), nic(nicsA[1]!, 10e12 + 200, 300)]));
    const april = await periodOf(api.admin, vmA);
    // nic 1's counter grew by 100 since its last counted value (its bad reading was left out)
    expect(april.period).toMatchObject({ start: '2026-04-01T00:00:00.000Z', rxBytes: 5100, txBytes: 500 });
    expect((await periodOf(api.admin, vmA, 1)).period).toMatchObject({ start: '2026-03-01T00:00:00.000Z', rxBytes: march.rxBytes, txBytes: march.txBytes });
    // the rate of the first 30 s of April extrapolates over the month
    expect(april.period.projectedTotalBytes).toBe(Math.round((5600 * 30 * 86_400) / 30));
  });

  it("discards deltas above the host's own cap, and bills a user with a billing day from that day", async () => {
    const capped = await api.admin(
      `mutation($h: ID!) { updateHost(input: { hostId: $h, trafficCapBps: 8000000 }) { ... on UpdateHostPayload { host { trafficCapBps } } ${ERROR_FIELDS} } }`,
      { h: hostId },
    );
    expect(capped.data.updateHost.host.trafficCapBps).toBe(8e6);
    expect(
      (await api.admin(`mutation($h: ID!) { updateHost(input: { hostId: $h, trafficCapBps: 5 }) { ... on Error { field } } }`, { h: hostId })).data.updateHost,
    ).toEqual({ field: 'input.trafficCapBps' });
    const before = (await periodOf(api.admin, vmB)).period.rxBytes;
    now += 1000;
    await send(report([nic(nicB, 30, 40)]));
    now += 1000;
    // 1 MB/s allowed: 2 MB in one second is impossible on this host
    await send(report([nic(nicB, 2_000_030, 40)]));
    now += 1000;
    await send(report([nic(nicB, 2_500_030, 40)]));
    expect((await periodOf(api.admin, vmB)).period.rxBytes).toBe(before + 20 + 500_000);
    await api.admin(`mutation($h: ID!) { updateHost(input: { hostId: $h, trafficCapBps: 100000000000 }) { __typename } }`, { h: hostId });

    const day = await api.admin(
      `mutation($u: ID!) { updateUserQuotas(input: { userId: $u, billingDay: 15 }) { ... on UpdateUserQuotasPayload { user { billingDay } } ${ERROR_FIELDS} } }`,
      { u: tenantB.id },
    );
    expect(day.data.updateUserQuotas.user.billingDay).toBe(15);
    expect(
      (await api.admin(`mutation($u: ID!) { updateUserQuotas(input: { userId: $u, billingDay: 31 }) { ... on Error { field } } }`, { u: tenantB.id })).data
        .updateUserQuotas,
    ).toEqual({ field: 'input.billingDay' });
    now += 1000;
    await send(report([nic(nicB, 2_500_130, 40)]));
    const period = (await periodOf(tenantB.client, vmB)).period;
    expect(period).toMatchObject({ start: '2026-03-15T00:00:00.000Z', end: '2026-04-15T00:00:00.000Z', rxBytes: 100 });
  });

  it("shows a user only their own instances' traffic, in queries and in trafficUpdated", async () => {
    expect((await tenantB.client(INSTANCE_TRAFFIC, { id: vmA })).data?.instance ?? null).toBeNull();
    const hostTraffic = await tenantA.client(`query($h: ID!) { host(id: $h) { traffic { period { totalBytes } } } }`, { h: hostId });
    expect(JSON.stringify(hostTraffic)).toMatch(/FORBIDDEN|NOT_FOUND/);
    expect((await api.admin(`query($h: ID!) { host(id: $h) { traffic { period { rxBytes } } } }`, { h: hostId })).data.host.traffic.period.rxBytes).toBe(
      5100 + 500_120,
    );

    const watch = (secret: string, variables: Record<string, unknown>) =>
      watchWs<{ instances: { instanceId: string; rxBps: number }[]; host: unknown }>({
        url: controller.url,
        secret,
        query:
          'subscription($ids: [ID!], $h: ID) { trafficUpdated(instanceIds: $ids, hostId: $h) { hostId instances { instanceId rxBps txBps } host { rxBps } } }',
        variables,
        field: 'trafficUpdated',
        clients,
      }).seen;
    // a reading of nic 0 one second before the one watched: its rate is over that second
    await send(report([nic(nicsA[0]!, 9000, 600, 'if9')]));
    const live = controller.container.resolve(TrafficLive);
    const watchingBefore = live.watching;
    const bobAsksForAlice = watch(tenantB.secret, { ids: [vmA] });
    const bobAll = watch(tenantB.secret, {});
    const aliceAll = watch(tenantA.secret, { h: hostId });
    // the three subscriptions are registered before the report they must (or must not) see
    const setUp = Date.now() + 10_000;
    while (live.watching < watchingBefore + 3 && Date.now() < setUp) await new Promise((r) => setTimeout(r, 20));
    expect(live.watching).toBe(watchingBefore + 3);
    now += 1000;
    await send(report([nic(nicsA[0]!, 10_000, 600, 'if9'), nic(nicB, 1030, 40)]));
    const deadline = Date.now() + 10_000;
    while ((aliceAll.length === 0 || bobAll.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(aliceAll[0]!.instances).toEqual([{ instanceId: vmA, rxBps: 8000, txBps: 0 }]);
    expect(aliceAll[0]!.host).toBeNull();
    expect(bobAll[0]!.instances.map((i) => i.instanceId)).toEqual([vmB]);
    expect(bobAsksForAlice).toEqual([]);
  });
});
