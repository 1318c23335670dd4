/**
 * New-connection rate limits of forwards (DDoS hardening) with real traffic in a lab: one source
 * opening 500 connections per second against a limit of 50 per second per source gets about 50
 * per second through (the limit's rate times the seconds it ran, plus its burst, ±10 %), while
 * another source at the same time is not limited at all; an overall limit refuses the excess
 * with a TCP reset; the excess is counted; rate limits change incrementally and read back without
 * drift.
 */
import { NetnsLab, eventually, labAvailable, tcpConnectRate, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARD, oneForwardState as state } from './support/one-forward.js';
import { Dataplane } from '../src/dataplane.js';
import { listTable } from '../src/nft.js';
import { TABLE } from '../src/render.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const SECONDS = 4;

/** The rate limit rules' counters (packets), in the order of the chain. */
async function limitCounters(host: LabNamespace): Promise<number[]> {
  const listing = (await listTable(TABLE.family, TABLE.table, { netns: host.name }))!;
  return listing
    .map((o) => o.rule as { chain: string; expr: Record<string, any>[] } | undefined)
    .filter((r) => r?.chain === 'fwd_sources' && r.expr.some((s) => 'limit' in s || 'set' in s))
    .map((r) => r!.expr.find((s) => 'counter' in s)!.counter.packets as number);
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('forward rate limits under real traffic', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  const servers: LabServer[] = [];
  let dp: Dataplane;

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm');
    const { ifA } = await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    await client.exec('ip', ['addr', 'add', '198.51.100.3/24', 'dev', ifA]);
    await lab.link(host, '10.0.0.1/24', vm, '10.0.0.5/24');
    await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    servers.push(tcpServer(vm, 2222, 'vm'));
    expect(await eventually(() => tcpOutcome(host, '10.0.0.5', 2222))).toBe('got:vm');
    dp = new Dataplane({ netns: host.name });
    await dp.apply(state(1, FORWARD));
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 10022))).toBe('got:vm');
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    await dp?.close();
    await lab.cleanup();
  });

  it('lets ~50/s of 500 connections/s from one source through a 50/s per-source limit, and another source is unaffected', async () => {
    const limit = { perSource: 50, total: null, burst: 5, action: 'drop' as const };
    // the forward's first limit is a rule change of fwd_sources and its element of the rate-limit counter set, no table replace
    expect(await dp.apply(state(2, { ...FORWARD, rateLimit: limit }))).toMatchObject({ mode: 'incremental', commands: 4 });
    expect(await dp.drift()).toEqual([]);
    const [flood, other] = await Promise.all([
      tcpConnectRate(client, '198.51.100.1', 10022, { rate: 500, seconds: SECONDS, localAddress: '198.51.100.2' }),
      tcpConnectRate(client, '198.51.100.1', 10022, { rate: 20, seconds: SECONDS, localAddress: '198.51.100.3' }),
    ]);
    const through = flood.counts['got:vm'] ?? 0;
    const expected = limit.perSource * flood.seconds + limit.burst;
    console.log(
      `per-source limit 50/s: ${through} of ${500 * SECONDS} through in ${flood.seconds} s (expected ${expected.toFixed(0)}); other source: ${JSON.stringify(other.counts)}`,
    );
    expect(Math.abs(through - expected) / expected).toBeLessThanOrEqual(0.1);
    expect(flood.counts.timeout).toBe(500 * SECONDS - through);
    expect(other.counts).toEqual({ 'got:vm': 20 * SECONDS });
    // every excess connection was counted by the limit's rule, and on the forward's element of
    // the rate-limit counter set, which the counter read reports per forward
    expect(await limitCounters(host)).toEqual([500 * SECONDS - through]);
    expect((await dp.counters()).rateLimited).toEqual(new Map([[FORWARD.id, 500 * SECONDS - through]]));
    // the sources' buckets and the rule's counter are the packet path's state: no drift
    expect(await dp.drift()).toEqual([]);
    expect(await dp.apply(state(3, { ...FORWARD, rateLimit: limit }))).toMatchObject({ mode: 'unchanged' });
  });

  it('refuses the excess over an overall 50/s limit with a TCP reset, whatever the source', async () => {
    const limit = { perSource: null, total: 50, burst: 5, action: 'reject' as const };
    expect(await dp.apply(state(4, { ...FORWARD, rateLimit: limit }))).toMatchObject({ mode: 'incremental' });
    await new Promise((r) => setTimeout(r, 200)); // the new bucket fills
    const prior = (await dp.counters()).rateLimited.get(FORWARD.id);
    expect(prior).toBeGreaterThan(0);
    const flood = await tcpConnectRate(client, '198.51.100.1', 10022, { rate: 500, seconds: SECONDS, localAddress: '198.51.100.3' });
    const through = flood.counts['got:vm'] ?? 0;
    const expected = limit.total * flood.seconds + limit.burst;
    console.log(
      `overall limit 50/s: ${through} of ${500 * SECONDS} through in ${flood.seconds} s (expected ${expected.toFixed(0)}): ${JSON.stringify(flood.counts)}`,
    );
    expect(Math.abs(through - expected) / expected).toBeLessThanOrEqual(0.1);
    expect(flood.counts.refused).toBe(500 * SECONDS - through);
    // the forward's element stayed: its count goes on across the change of limits
    expect((await dp.counters()).rateLimited.get(FORWARD.id)).toBe(prior! + 500 * SECONDS - through);
  });

  it('removes the limit incrementally: the flood gets through again', async () => {
    expect(await dp.apply(state(5, FORWARD))).toMatchObject({ mode: 'incremental' });
    expect(await limitCounters(host)).toEqual([]);
    // no rate limit, no rate-limit counter read
    expect((await dp.counters()).rateLimited).toEqual(new Map());
    const flood = await tcpConnectRate(client, '198.51.100.1', 10022, { rate: 200, seconds: 1, localAddress: '198.51.100.2' });
    expect(flood.counts).toEqual({ 'got:vm': 200 });
  });
});
