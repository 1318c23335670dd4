/**
 * Traffic reports written in batches (traffic-ingest.ts), on both stores. Reports of several hosts
 * sent at once — several of one host among them, with replays, reports out of order, resets by
 * value and by epoch and impossible deltas — count exactly what the delta rules give when the
 * reports are taken one at a time in the order they arrived (counter-delta.ts is the model), in
 * fewer transactions than reports; a report of an unknown host fails alone. Two controllers taking
 * the same host's reports at once (a reconnecting agent) and other hosts' reports count every byte
 * once (on PostgreSQL with a store each on one database, on PGlite sharing the store).
 */
import 'reflect-metadata';
import type { ReportTrafficInput } from '@gatehouse/agent-protocol';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { systemActor } from '../src/auth/actor.js';
import { openStore, rowsOf, type Store, type StoreConfig } from '../src/db/database.js';
import { createContainer } from '../src/server.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { DEFAULT_TRAFFIC_CAP_BPS, counterDelta, type CounterReading, type CounterValues } from '../src/traffic/counter-delta.js';
import { TrafficIngest } from '../src/traffic/traffic-ingest.js';
import { NotFoundError } from '../src/support/errors.js';

const backends = await storeBackends();
const actor = systemActor('traffic-batch-test');
const HOSTS = 3;
const NICS = 4;

/** A small deterministic generator (the same script on every run). */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

/** Totals per object from the billing periods, the minute buckets and the stored readings. */
async function stored(store: Store) {
  const rows = <T>(q: ReturnType<typeof sql>) => store.db.execute(q).then((r) => rowsOf<T>(r));
  const sums = (table: string) =>
    rows<{ object_type: string; object_id: string; rx: number; rp: number; tx: number; tp: number }>(
      sql.raw(`select object_type, object_id::text, sum(rx_bytes)::float8 as rx, sum(rx_packets)::float8 as rp, sum(tx_bytes)::float8 as tx,
                      sum(tx_packets)::float8 as tp from ${table} ${table === 'traffic_buckets' ? "where resolution = 'minute'" : ''} group by 1, 2`),
    ).then((r) => new Map(r.map((x) => [`${x.object_type}:${x.object_id}`, [x.rx, x.rp, x.tx, x.tp].map(Number)])));
  const counters = await rows<{ object_id: string; epoch: string; sequence: number; rx: number; rp: number; tx: number; tp: number }>(
    sql`select object_id::text, epoch, sequence::float8 as sequence, rx_bytes::float8 as rx, rx_packets::float8 as rp, tx_bytes::float8 as tx, tx_packets::float8 as tp from traffic_counters`,
  );
  return {
    periods: await sums('traffic_periods'),
    buckets: await sums('traffic_buckets'),
    counters: new Map(counters.map((c) => [c.object_id, { epoch: c.epoch, sequence: Number(c.sequence), values: [c.rx, c.rp, c.tx, c.tp].map(Number) }])),
  };
}

describe.each(backends)('traffic reports in batches on $name', (backend) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let config: StoreConfig;
  let api: TestApi;
  let container: ReturnType<typeof createContainer>;
  const hosts: { id: string; nics: string[] }[] = [];

  beforeAll(async () => {
    const opened = await backend.open();
    store = opened.store;
    config = opened.config;
    cleanup = opened.cleanup;
    container = createContainer(store);
    api = await createTestApi(store, container);
    for (let h = 0; h < HOSTS; h++) {
      const id = await createHost(api.admin, `batch-host-${h}`);
      hosts.push({ id, nics: await createNics(api.admin, id, undefined, `batch-vm-${h}`, 'br0', NICS) });
    }
  });
  afterAll(async () => {
    await cleanup?.();
  });

  it('counts reports sent at once exactly as one at a time in arrival order, in fewer transactions', async () => {
    const next = random(7);
    const start = Date.now() - 3_600_000;
    // each NIC's counters as its host reads them: growing, and now and then re-created or going backwards
    const counters = hosts.map((h) => h.nics.map(() => ({ epoch: 'if1', values: [0, 0, 0, 0] })));
    const reports: ReportTrafficInput[] = [];
    const unknownHost = '00000000-0000-4000-8000-00000000beef';
    for (let round = 1; round <= 40; round++) {
      const group: ReportTrafficInput[] = [];
      hosts.forEach((host, h) => {
        for (const [n, c] of counters[h]!.entries()) {
          const roll = next();
          if (roll < 0.05) c.epoch = `if${round}-${n}`; // a re-created interface: small new values
          if (roll < 0.1) c.values = c.values.map((v) => Math.floor(v * next() * 0.5));
          else if (roll < 0.13)
            c.values = [c.values[0]! + 20e12, c.values[1]! + 1, c.values[2]!, c.values[3]!]; // impossible
          else c.values = c.values.map((v, i) => v + Math.floor(next() * (i % 2 === 0 ? 5_000_000 : 4000)));
        }
        group.push({
          hostId: host.id,
          bootId: 'boot-batch',
          sequence: round,
          nics: {
            at: new Date(start + round * 1000).toISOString(),
            intervalMs: 1000,
            counters: host.nics.map((nicId, n) => {
              const c = counters[h]![n]!;
              return { nicId, epoch: c.epoch, rxBytes: c.values[0]!, rxPackets: c.values[1]!, txBytes: c.values[2]!, txPackets: c.values[3]! };
            }),
          },
        });
      });
      // a replayed report, and two of one host swapped (the older arrives after the newer)
      if (round % 3 === 0) group.push(structuredClone(group[0]!));
      if (round % 4 === 0 && reports.length > 0) {
        const older = reports.findLastIndex((r) => r.hostId === group[1]!.hostId);
        group.push(reports.splice(older, 1)[0]!);
      }
      reports.push(...group);
    }
    // the model: every report taken on its own, in the order sent
    const expected = new Map<string, number[]>();
    const last = new Map<string, CounterReading>();
    for (const r of reports) {
      const hostNics = hosts.find((h) => h.id === r.hostId)!;
      const sum = [0, 0, 0, 0];
      for (const c of r.nics.counters) {
        const reading: CounterReading = {
          epoch: `${r.bootId}/${c.epoch}`,
          sequence: r.sequence,
          at: Date.parse(r.nics.at),
          values: [c.rxBytes, c.rxPackets, c.txBytes, c.txPackets] as CounterValues,
        };
        const d = counterDelta(last.get(c.nicId), reading, DEFAULT_TRAFFIC_CAP_BPS, r.nics.intervalMs);
        if (d.outcome === 'replay') continue;
        last.set(c.nicId, d.next);
        const key = `nic:${c.nicId}`;
        expected.set(
          key,
          (expected.get(key) ?? [0, 0, 0, 0]).map((v, i) => v + d.delta[i]!),
        );
        d.delta.forEach((v, i) => (sum[i]! += v));
      }
      const hostKey = `host:${hostNics.id}`;
      expected.set(
        hostKey,
        (expected.get(hostKey) ?? [0, 0, 0, 0]).map((v, i) => v + sum[i]!),
      );
    }
    for (const [key, v] of [...expected]) if (v.every((x) => x === 0)) expected.delete(key);
    // a sanity check of the script: it holds each kind of reading
    const outcomes = { replay: 0, reset: 0, discarded: 0, counted: 0 };

    const ingest = container.resolve(TrafficIngest);
    const transactions = vi.spyOn(store.db, 'transaction');
    // sent in groups of five rounds at once (15 reports and their replays); an unknown host's report among them
    const perGroup = 5 * HOSTS + 4;
    for (let i = 0; i < reports.length; i += perGroup) {
      const group = reports.slice(i, i + perGroup).map((r) => ingest.report(actor, r));
      const unknown = ingest.report(actor, { ...reports[i]!, hostId: unknownHost });
      const results = await Promise.all(group);
      await expect(unknown).rejects.toBeInstanceOf(NotFoundError);
      for (const r of results) {
        expect(r.rejected).toEqual([]);
        for (const k of Object.keys(outcomes) as (keyof typeof outcomes)[]) outcomes[k] += r.outcomes[k];
      }
    }
    const calls = transactions.mock.calls.length;
    transactions.mockRestore();
    expect(Object.values(outcomes).every((n) => n > 0)).toBe(true);
    expect(calls).toBeLessThan(reports.length / 3);

    const got = await stored(store);
    expect(Object.fromEntries(got.periods)).toEqual(Object.fromEntries(expected));
    expect(Object.fromEntries(got.buckets)).toEqual(Object.fromEntries(expected));
    for (const [nicId, reading] of last) expect(got.counters.get(nicId)).toEqual({ epoch: reading.epoch, sequence: reading.sequence, values: reading.values });
  });

  // on PostgreSQL two controllers with their own connections to one database; PGlite has one
  // process's store, so there two controllers' containers share it (two batch queues writing at once)
  it('counts every byte once when two controllers take the same host’s reports at once', async () => {
    const replica = backend.name === 'postgres' ? await openStore(config) : undefined;
    const ingests = [container.resolve(TrafficIngest), createContainer(replica ?? store).resolve(TrafficIngest)];
    try {
      const before = (await stored(store)).periods;
      // a new boot: every NIC's counters start again (a reset) and grow by 1 MB a second
      const value = (round: number, n: number) => round * 1_000_000 + n;
      const report = (h: number, round: number): ReportTrafficInput => ({
        hostId: hosts[h]!.id,
        bootId: 'boot-replicas',
        sequence: 100 + round,
        nics: {
          at: new Date(Date.now() - 60_000 + round * 1000).toISOString(),
          intervalMs: 1000,
          counters: hosts[h]!.nics.map((nicId, n) => ({
            nicId,
            epoch: 'if1',
            rxBytes: value(round, n),
            rxPackets: round,
            txBytes: value(round, n),
            txPackets: round,
          })),
        },
      });
      // host 0 reports to both controllers (each report twice, rounds overlapping), host 1 to the first, host 2 to the second
      const ROUNDS = 30;
      for (let round = 1; round <= ROUNDS; round += 5) {
        const sent: Promise<unknown>[] = [];
        for (let r = round; r < round + 5; r++)
          sent.push(
            ingests[0]!.report(actor, report(0, r)),
            ingests[1]!.report(actor, report(0, r)),
            ingests[0]!.report(actor, report(1, r)),
            ingests[1]!.report(actor, report(2, r)),
          );
        await Promise.all(sent);
      }
      const after = (await stored(store)).periods;
      for (const [h, host] of hosts.entries()) {
        const added = (key: string) => after.get(key)!.map((v, i) => v - (before.get(key)?.[i] ?? 0));
        const hostSum = [0, 0, 0, 0];
        for (const [n, nicId] of host.nics.entries()) {
          // the newest reading's values, counted from zero: once, whichever controller took which reading
          const expected = [value(ROUNDS, n), ROUNDS, value(ROUNDS, n), ROUNDS];
          expect({ h, n, added: added(`nic:${nicId}`) }).toEqual({ h, n, added: expected });
          expected.forEach((v, i) => (hostSum[i]! += v));
        }
        expect(added(`host:${host.id}`)).toEqual(hostSum);
      }
    } finally {
      await replica?.close();
    }
  });
});
