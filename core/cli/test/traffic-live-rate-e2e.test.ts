/**
 * The live rate on the `trafficUpdated` subscription against iperf3, on real traffic, as root: a
 * controller in this process, the host agent with the Linux plugin reporting every 500 ms, and
 * iperf3 from a client namespace to an instance namespace through a port forward. A 40 Mbit/s
 * limit on the instance keeps the rate steady; the mean of the subscription's rxBps (into the
 * instance) over the steady part of the run must match iperf3's received rate within 5 %.
 */
import { eventually, labAvailable, tcpOutcome } from '@gatehouse/sdk/testkit';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTrafficLab, type TrafficLab } from './support/traffic-lab.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const LIMIT_MBPS = 40;
const SECONDS = 10;
const OMIT_SECONDS = 2;

describe.skipIf(!available && !REQUIRE_SYSTEM)('live traffic rate against iperf3', () => {
  let lab: TrafficLab;
  let ws: WsClient | undefined;

  beforeAll(async () => {
    lab = await startTrafficLab({
      name: 'live-rate',
      cidr: '10.77.0.0/24',
      gateway: '10.77.0.1',
      limit: `ingressMbps: ${LIMIT_MBPS}, egressMbps: ${LIMIT_MBPS}`,
    });
  }, 120_000);

  afterAll(async () => {
    await ws?.dispose();
    await lab?.stop();
  }, 60_000);

  it("matches iperf3's rate within 5 % on the trafficUpdated subscription", async () => {
    expect(await eventually(() => tcpOutcome(lab.client, '198.51.100.1', 18080), 20_000)).toBe('got:hello');
    await lab.applied();

    const seen: { at: number; rxBps: number }[] = [];
    ws = createClient({
      url: lab.controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${lab.admin}` },
    });
    ws.subscribe<{ trafficUpdated: { at: string; instances: { instanceId: string; rxBps: number }[] } }>(
      { query: 'subscription($ids: [ID!]) { trafficUpdated(instanceIds: $ids) { at instances { instanceId rxBps } } }', variables: { ids: [lab.instanceId] } },
      {
        next: (m) => {
          const update = m.data?.trafficUpdated;
          const mine = update?.instances.find((i) => i.instanceId === lab.instanceId);
          if (update && mine) seen.push({ at: Date.parse(update.at), rxBps: mine.rxBps });
        },
        error: () => {},
        complete: () => {},
      },
    );
    // the subscription is live once it delivers (the agent reports every 500 ms, idle or not)
    const live = Date.now() + 10_000;
    while (seen.length === 0 && Date.now() < live) await new Promise((r) => setTimeout(r, 50));
    expect(seen.length).toBeGreaterThan(0);

    const started = Date.now();
    const result = await lab.iperf(false, ['-t', String(SECONDS), '-O', String(OMIT_SECONDS)]);
    const ended = Date.now();
    const iperfBps = result.sum_received.bits_per_second;
    // steady part: after iperf3's omitted start (plus a report interval), before its last second
    const steady = seen.filter((s) => s.at >= started + (OMIT_SECONDS + 0.5) * 1000 && s.at <= ended - 1000);
    expect(steady.length).toBeGreaterThanOrEqual(8);
    const liveBps = steady.reduce((sum, s) => sum + s.rxBps, 0) / steady.length;
    console.log(
      `[live rate e2e] iperf3 ${(iperfBps / 1e6).toFixed(2)} Mbit/s, trafficUpdated mean rxBps ${(liveBps / 1e6).toFixed(2)} Mbit/s over ${steady.length} messages (${(((liveBps - iperfBps) / iperfBps) * 100).toFixed(2)} %)`,
    );
    expect(iperfBps).toBeGreaterThan(LIMIT_MBPS * 1e6 * 0.8);
    expect(Math.abs(liveBps / iperfBps - 1)).toBeLessThanOrEqual(0.05);
  }, 120_000);
});
