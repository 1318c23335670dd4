/**
 * A host with 500 instances reporting through the API as its agent does: one report per interval
 * carries all 500 NICs, its rates reach the bus in parts that each fit one PostgreSQL NOTIFY
 * (< 8000 bytes) and name every instance once, and ingest time per report is measured.
 */
import { REPORT_TRAFFIC_MUTATION, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import { EventBusToken } from '../src/di/tokens.js';
import type { TrafficRatesMessage } from '../src/events/event-payloads.js';
import { createContainer } from '../src/server.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost } from '../src/testing/fixtures.js';

const INSTANCES = 500;

describe('traffic of a host with 500 instances', () => {
  let store: Store;
  let api: TestApi;
  let container: ReturnType<typeof createContainer>;
  let hostId: string;
  const nics: string[] = [];
  const instanceIds = new Set<string>();

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    container = createContainer(store);
    api = await createTestApi(store, container);
    hostId = await createHost(api.admin, 'scale-host');
    for (let n = 0; n < INSTANCES; n++) {
      const r = await api.admin(
        `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { ... on CreateInstancePayload { instance { id nics { id } } } } }`,
        { input: { hostId, name: `vm-${n}`, nics: [{ network: 'br0', allocate: [] }] } },
      );
      instanceIds.add(r.data.createInstance.instance.id);
      nics.push(r.data.createInstance.instance.nics[0].id);
    }
  }, 300_000);
  afterAll(async () => {
    await store?.close();
  });

  it('takes one report of all NICs, and publishes its rates in NOTIFY-sized parts naming each instance once', async () => {
    const messages: TrafficRatesMessage[] = [];
    const subscription = container.resolve(EventBusToken).subscribe('trafficRates');
    void (async () => {
      for await (const m of subscription) messages.push(m);
    })();
    const report = (sequence: number, bytes: number): ReportTrafficInput => ({
      hostId,
      bootId: 'boot-scale',
      sequence,
      nics: {
        at: new Date().toISOString(),
        intervalMs: 1000,
        counters: nics.map((nicId, i) => ({ nicId, epoch: 'if1', rxBytes: bytes + i, rxPackets: bytes, txBytes: bytes, txPackets: bytes })),
      },
    });
    const timings: number[] = [];
    for (let s = 1; s <= 6; s++) {
      const started = performance.now();
      const r = await api.admin(REPORT_TRAFFIC_MUTATION, { input: report(s, s * 125_000) });
      timings.push(performance.now() - started);
      expect(r.data.reportTraffic.outcome).toEqual({ counted: INSTANCES, rejected: [] });
    }
    await new Promise((r) => setTimeout(r, 100));
    await subscription.return(undefined);
    // the first report is the baseline; each of the next five is one interval in parts
    const last = messages.filter((m) => m.at === messages.at(-1)!.at);
    expect(last.length).toBe(last[0]!.parts);
    for (const m of messages) expect(Buffer.byteLength(JSON.stringify({ topic: 'trafficRates', payload: m }))).toBeLessThan(7000);
    const named = last.flatMap((m) => m.instances.map((i) => i.instanceId));
    expect(named.length).toBe(INSTANCES);
    expect(new Set(named)).toEqual(instanceIds);
    expect(last.every((m) => m.instances.every((i) => i.rxBps === 1_000_000))).toBe(true);
    expect(last[0]!.host.rxBps).toBe(INSTANCES * 1_000_000);
    const period = await api.admin(`query($h: ID!) { host(id: $h) { traffic { period { rxBytes } } } }`, { h: hostId });
    expect(period.data.host.traffic.period.rxBytes).toBe(5 * 125_000 * INSTANCES);
    timings.sort((a, b) => a - b);
    console.log(`500-NIC report on PGlite: median ${timings[3]!.toFixed(0)} ms, max ${timings[5]!.toFixed(0)} ms; ${last.length} bus parts per interval`);
  }, 120_000);
});
