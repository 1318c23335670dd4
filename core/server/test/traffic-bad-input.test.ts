/**
 * 10 MB traffic reports, over HTTP as a client sends them: a report of 10 MB of counters is refused
 * as a whole (typed error naming the field, nothing stored); a report whose one counter carries a
 * 10 MB epoch leaves that counter out (named, its value cut short in the answer) and counts the
 * others.
 */
import { REPORT_TRAFFIC_MUTATION, type NicTrafficInput, type ReportTrafficInput } from '@gatehouse/agent-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';

describe('10 MB traffic reports', () => {
  let controller: Controller;
  let api: TestApi;
  let hostId: string;
  let nics: string[];
  let instanceId: string;
  let agentSecret: string;
  let sequence = 0;

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'big-host');
    nics = await createNics(api.admin, hostId, undefined, 'vm-big', 'br0', 2);
    instanceId = (await api.admin('{ instances { edges { node { id } } } }')).data.instances.edges[0].node.id;
    const adminId = (await api.admin('{ me { id } }')).data.me.id;
    const token = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: adminId, h: hostId },
    );
    agentSecret = token.data.createApiToken.created.secret;
  });
  afterAll(async () => {
    await controller?.close();
  });

  const http: Client = async (query, variables) => {
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${agentSecret}` },
      body: JSON.stringify({ query, variables }),
    });
    return response.json() as never;
  };
  const nic = (nicId: string, bytes: number, epoch = 'if5'): NicTrafficInput => ({ nicId, epoch, rxBytes: bytes, rxPackets: 1, txBytes: bytes, txPackets: 1 });
  const send = async (counters: NicTrafficInput[]) => {
    const input: ReportTrafficInput = { hostId, bootId: 'boot-big', sequence: ++sequence, nics: { at: new Date().toISOString(), intervalMs: 1000, counters } };
    const r = await http(REPORT_TRAFFIC_MUTATION.replace('... on Error { message }', ERROR_FIELDS), { input });
    expect(r.errors).toBeUndefined();
    return r.data.reportTraffic;
  };
  const total = async () =>
    (await api.admin(`query($id: ID!) { instance(id: $id) { traffic { period { rxBytes } } } }`, { id: instanceId })).data.instance.traffic.period.rxBytes;

  it('refuses 10 MB of counters as a whole and stores nothing', async () => {
    await send([nic(nics[0]!, 0), nic(nics[1]!, 0)]);
    const counters = Array.from({ length: 90_000 }, (_, n) => nic(nics[n % 2]!, 1000 + n));
    expect(JSON.stringify(counters).length).toBeGreaterThan(10_000_000);
    expect(await send(counters)).toMatchObject({ __typename: 'ValidationError', field: 'input.nics.counters' });
    expect(await total()).toBe(0);
  });

  it('leaves out a counter with a 10 MB epoch, naming it without echoing it, and counts the other', async () => {
    const result = await send([nic(nics[0]!, 5000, 'x'.repeat(10_000_000)), nic(nics[1]!, 7000)]);
    expect(result.outcome.counted).toBe(1);
    expect(result.outcome.rejected).toHaveLength(1);
    expect(result.outcome.rejected[0].field).toBe('input.nics.counters[0].epoch');
    // the answer names it without echoing 10 MB back
    expect(result.outcome.rejected[0].message.length).toBeLessThan(400);
    expect(await total()).toBe(7000);
  });
});
