/**
 * `trafficUpdated` with shared results (graphql/shared-subscription-results.ts): subscribers of
 * one user on two tokens asking the same document share the update and its execution, another
 * document over the same view gets its own selection, another user asking for the same ids gets
 * only their own instance, and revoking one token ends its graphql-ws connection (4403) and its
 * server-sent-events stream while the other token's subscriptions carry on.
 */
import { REPORT_TRAFFIC_MUTATION, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { TrafficLive } from '../src/traffic/traffic-live.js';
import { agentSecret, instanceIdsByName, watchWs } from './support/traffic.js';

const backends = await storeBackends();

const FULL = 'subscription($ids: [ID!]) { trafficUpdated(instanceIds: $ids) { hostId at intervalMs instances { instanceId rxBps txBps } host { rxBps } } }';
const SMALL = 'subscription($ids: [ID!]) { trafficUpdated(instanceIds: $ids) { hostId instances { instanceId } } }';

const until = async (done: () => boolean, what: string) => {
  const deadline = Date.now() + 15_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

describe.each(backends)('trafficUpdated fan-out on $name', (backend) => {
  let controller: Controller;
  let api: TestApi;
  let cleanup: () => Promise<void>;
  let agent: Client;
  let hostId: string;
  let nicA: string;
  let nicB: string;
  let vmA: string;
  let vmB: string;
  let alice: { id: string; secret: string };
  let aliceSecond: { id: string; secret: string };
  let bob: { secret: string };
  let sequence = 0;
  const clients: WsClient[] = [];
  const rx = { a: 0, b: 0 };
  // readings exactly a second apart: the rates are exact
  let now = Date.now();
  const clock = { now: () => new Date(now) };

  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    controller = await startController({ store: opened.config, port: 0, bootstrap: false, clock });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'fanout-host');
    const a = await api.tenant('fanout-alice');
    alice = { id: a.id, secret: a.secret };
    bob = await api.tenant('fanout-bob');
    const second = await api.admin(
      `mutation($u: ID!) { createApiToken(input: { userId: $u, name: "second", scope: USER }) { ... on CreateApiTokenPayload { created { secret token { id } } } } }`,
      { u: alice.id },
    );
    aliceSecond = { id: second.data.createApiToken.created.token.id, secret: second.data.createApiToken.created.secret };
    nicA = (await createNics(api.admin, hostId, alice.id, 'fan-a', 'br0', 1))[0]!;
    nicB = (await createNics(api.admin, hostId, (await api.clientFor(bob.secret)('{ me { id } }')).data.me.id, 'fan-b', 'br0', 1))[0]!;
    const instances = await instanceIdsByName(api.admin);
    vmA = instances.get('fan-a')!;
    vmB = instances.get('fan-b')!;
    agent = api.clientFor(await agentSecret(api.admin, hostId));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
    await cleanup?.();
  });

  /** One report: vm-a's NIC 1000 bytes more, vm-b's 2000 (8000 and 16000 bit/s over its second). */
  async function report(): Promise<number> {
    rx.a += 1000;
    rx.b += 2000;
    now += 1000;
    const at = now;
    const input: ReportTrafficInput = {
      hostId,
      bootId: 'boot-fanout',
      sequence: ++sequence,
      nics: {
        at: new Date(at).toISOString(),
        intervalMs: 1000,
        counters: [
          { nicId: nicA, epoch: 'if1', rxBytes: rx.a, rxPackets: rx.a / 100, txBytes: 0, txPackets: 0 },
          { nicId: nicB, epoch: 'if1', rxBytes: rx.b, rxPackets: rx.b / 100, txBytes: 0, txPackets: 0 },
        ],
      },
    };
    const r = await agent(REPORT_TRAFFIC_MUTATION, { input });
    expect(r.errors).toBeUndefined();
    return at;
  }

  const watch = (secret: string, query: string) =>
    watchWs<Record<string, unknown>>({ url: controller.url, secret, query, variables: { ids: [vmA, vmB] }, field: 'trafficUpdated', clients });

  /** A server-sent-events subscription: the data lines it received, and whether the stream ended. */
  async function watchSse(secret: string, query: string) {
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${secret}` },
      body: JSON.stringify({ query, variables: { ids: [vmA, vmB] } }),
    });
    expect(response.status).toBe(200);
    const state = { events: [] as unknown[], ended: false };
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let text = '';
      for (;;) {
        // a stream ended by the server may end in an aborted read: ended all the same
        const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
        if (done) break;
        text += value;
        const blocks = text.split('\n\n');
        text = blocks.pop()!;
        for (const block of blocks) {
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data && data.length > 'data: '.length) state.events.push(JSON.parse(data.slice('data: '.length)));
        }
      }
      state.ended = true;
    })();
    return state;
  }

  it('shares one update among same-view subscribers, keeps selections and tenancy apart, and ends only a revoked token', async () => {
    await report(); // the first reading has no rate yet
    const first = watch(alice.secret, FULL);
    const second = watch(aliceSecond.secret, FULL); // the same view and document on another token
    const small = watch(alice.secret, SMALL); // the same view, another selection
    const bobs = watch(bob.secret, FULL); // another user asking for both instances
    const sse = await watchSse(aliceSecond.secret, FULL);
    const live = controller.container.resolve(TrafficLive);
    await until(() => live.watching === 5, 'the five subscriptions set up');

    const at = await report();
    await until(() => [first, second, small, bobs].every((w) => w.seen.length === 1) && sse.events.length === 1, 'the first update everywhere');
    const aliceSees = { hostId, at: new Date(at).toISOString(), intervalMs: 1000, instances: [{ instanceId: vmA, rxBps: 8000, txBps: 0 }], host: null };
    expect(first.seen).toEqual([aliceSees]);
    expect(second.seen).toEqual([aliceSees]);
    expect(sse.events).toEqual([{ data: { trafficUpdated: aliceSees } }]);
    expect(small.seen).toEqual([{ hostId, instances: [{ instanceId: vmA }] }]);
    expect(bobs.seen).toEqual([{ ...aliceSees, instances: [{ instanceId: vmB, rxBps: 16_000, txBps: 0 }] }]);

    // the second token is revoked: its socket closes with 4403 and its event stream ends; the first token's go on
    const revoked = await api.admin(`mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, { id: aliceSecond.id });
    expect(revoked.data.revokeApiToken.__typename).toBe('RevokeApiTokenPayload');
    expect(await second.closed).toBe(4403);
    await until(() => sse.ended, 'the revoked event stream to end');
    await until(() => live.watching === 3, 'the revoked subscriptions gone');
    await report();
    await until(() => [first, small, bobs].every((w) => w.seen.length === 2), 'the second update');
    await new Promise((r) => setTimeout(r, 300)); // room for a wrongly delivered message
    expect(first.seen[1]!.instances).toEqual([{ instanceId: vmA, rxBps: expect.any(Number), txBps: 0 }]);
    expect(second.seen).toHaveLength(1);
    expect(sse.events).toHaveLength(1);
  });
});
