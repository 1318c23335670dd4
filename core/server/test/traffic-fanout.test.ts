/**
 * `trafficUpdated` with shared results (graphql/shared-subscription-results.ts): subscribers of
 * one user on two tokens asking the same document share the update and its execution, another
 * document over the same view gets its own selection, another user asking for the same ids gets
 * only their own instance, and revoking one token ends its graphql-ws connection (4403) and its
 * server-sent-events stream while the other token's subscriptions carry on.
 */
import { REPORT_TRAFFIC_MUTATION, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startController, type Controller } from '../src/server.js';
import { createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';

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
    const instances = (await api.admin('{ instances { edges { node { id name } } } }')).data.instances.edges.map(
      (e: { node: { id: string; name: string } }) => e.node,
    );
    vmA = instances.find((i: { name: string }) => i.name === 'fan-a').id;
    vmB = instances.find((i: { name: string }) => i.name === 'fan-b').id;
    const adminId = (await api.admin('{ me { id } }')).data.me.id;
    const token = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: adminId, h: hostId },
    );
    agent = api.clientFor(token.data.createApiToken.created.secret);
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

  function watch(secret: string, query: string) {
    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: () => {},
      connectionParams: { Authorization: `Bearer ${secret}` },
    });
    clients.push(client);
    const seen: { trafficUpdated: Record<string, unknown> }[] = [];
    const closed = new Promise<number>((resolve) => client.on('closed', (e) => resolve((e as { code: number }).code)));
    client.subscribe<{ trafficUpdated: Record<string, unknown> }>(
      { query, variables: { ids: [vmA, vmB] } },
      { next: (m) => m.data && seen.push(m.data), error: () => {}, complete: () => {} },
    );
    return { seen, closed };
  }

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
    await new Promise((r) => setTimeout(r, 500)); // subscriptions set up

    const at = await report();
    await until(() => [first, second, small, bobs].every((w) => w.seen.length === 1) && sse.events.length === 1, 'the first update everywhere');
    const aliceSees = {
      trafficUpdated: { hostId, at: new Date(at).toISOString(), intervalMs: 1000, instances: [{ instanceId: vmA, rxBps: 8000, txBps: 0 }], host: null },
    };
    expect(first.seen).toEqual([aliceSees]);
    expect(second.seen).toEqual([aliceSees]);
    expect(sse.events).toEqual([{ data: aliceSees }]);
    expect(small.seen).toEqual([{ trafficUpdated: { hostId, instances: [{ instanceId: vmA }] } }]);
    expect(bobs.seen).toEqual([{ trafficUpdated: { ...aliceSees.trafficUpdated, instances: [{ instanceId: vmB, rxBps: 16_000, txBps: 0 }] } }]);

    // the second token is revoked: its socket closes with 4403 and its event stream ends; the first token's go on
    const revoked = await api.admin(`mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, { id: aliceSecond.id });
    expect(revoked.data.revokeApiToken.__typename).toBe('RevokeApiTokenPayload');
    expect(await second.closed).toBe(4403);
    await until(() => sse.ended, 'the revoked event stream to end');
    await report();
    await until(() => [first, small, bobs].every((w) => w.seen.length === 2), 'the second update');
    await new Promise((r) => setTimeout(r, 300)); // room for a wrongly delivered message
    expect(first.seen[1]!.trafficUpdated.instances).toEqual([{ instanceId: vmA, rxBps: expect.any(Number), txBps: 0 }]);
    expect(second.seen).toHaveLength(1);
    expect(sse.events).toHaveLength(1);
  });
});
