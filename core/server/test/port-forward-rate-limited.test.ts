/**
 * What a forward's rate limits refused, as the agent reports it with the traffic counters
 * (`ForwardTrafficInput.rateLimited`), in `PortForward.rateLimited { connections since }` and in
 * `/metrics` (`gatehouse_host_port_forward_rate_limited_connections_total`): counted from the
 * first reading, by difference while the counter grows, from zero again after a restart (a smaller
 * value or a new epoch), nothing for a replayed report, kept across an edit; a bad value is refused
 * naming its field while the forward's traffic still counts.
 */
import { REPORT_TRAFFIC_MUTATION, type ForwardTrafficInput } from '@gatehouse/agent-protocol';
import type { DriverCapabilities } from '@gatehouse/sdk';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';

const CAPS: DriverCapabilities = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: false, sourceAllowLists: true, rateLimits: true },
  firewall: null,
  shaping: null,
  nics: { max: 8, hotplug: true, staticAddressing: true },
};

describe('PortForward.rateLimited', () => {
  let controller: Controller;
  let api: TestApi;
  let hostId: string;
  let forwardId: string;
  let agent: Client;
  let sequence = 0;

  const report = async (counter: Partial<ForwardTrafficInput>, options: { replay?: boolean } = {}) => {
    if (!options.replay) sequence++;
    const r = await agent(REPORT_TRAFFIC_MUTATION.replace('... on Error { message }', ERROR_FIELDS), {
      input: {
        hostId,
        bootId: 'boot-r',
        sequence,
        nics: { at: new Date().toISOString(), intervalMs: 1000, counters: [] },
        forwards: {
          at: new Date().toISOString(),
          intervalMs: 1000,
          counters: [{ forwardId, epoch: 't1.2.3', bytes: sequence * 100, packets: sequence, ...counter }],
        },
      },
    });
    return r.data.reportTraffic.outcome as { counted: number; rejected: { field: string; message: string }[] };
  };
  const limited = async () =>
    (await api.admin(`query($id: ID!) { portForward(id: $id) { rateLimited { connections since } } }`, { id: forwardId })).data.portForward.rateLimited as {
      connections: number;
      since: string;
    } | null;

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'r-host');
    const adminId = (await api.admin('{ me { id } }')).data.me.id;
    const token = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: adminId, h: hostId },
    );
    agent = api.clientFor(token.data.createApiToken.created.secret);
    const status = await agent(`mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`, {
      input: { hostId, agentVersion: '0.1.0', pluginId: 'linux', driver: { id: 'linux', version: '0.1.0', apiVersion: 1, capabilities: CAPS } },
    });
    expect(status.data.reportHostStatus.__typename).toBe('ReportHostStatusPayload');
    await createPool(api.admin, { name: 'r-pool', kind: 'PRIVATE', network: 'br-r', cidr: '10.41.0.0/24' });
    const instance = await api.admin(
      `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
      { input: { hostId, name: 'vm-r', nics: [{ network: 'br-r' }] } },
    );
    const created = await api.admin(
      `mutation($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18000", targetPort: "80", rateLimit: { perSource: 50 } }) { __typename ... on CreatePortForwardPayload { portForward { id rateLimited { connections } } } ${ERROR_FIELDS} } }`,
      { id: instance.data.createInstance.instance.id },
    );
    expect(created.data.createPortForward.__typename, JSON.stringify(created)).toBe('CreatePortForwardPayload');
    forwardId = created.data.createPortForward.portForward.id;
    expect(created.data.createPortForward.portForward.rateLimited).toBeNull();
  });
  afterAll(async () => {
    await controller?.close();
  });

  it('adds up the refused connections over readings, restarts and an edit, and ignores replays', async () => {
    // a forward whose report carries no rate-limit count has none
    expect((await report({})).rejected).toEqual([]);
    expect(await limited()).toBeNull();
    // the first reading counts whole: the counter started from zero when the limit came
    expect((await report({ rateLimited: 40 })).rejected).toEqual([]);
    const first = await limited();
    expect(first?.connections).toBe(40);
    expect(Date.parse(first!.since)).toBeLessThanOrEqual(Date.now());
    await report({ rateLimited: 100 });
    expect((await limited())?.connections).toBe(100);
    // the same sequence again: a replay adds nothing
    await report({ rateLimited: 500 }, { replay: true });
    expect((await limited())?.connections).toBe(100);
    // a smaller value: the counter restarted, its whole value is new
    await report({ rateLimited: 7 });
    expect((await limited())?.connections).toBe(107);
    // a new epoch (the table replaced): the same
    await report({ rateLimited: 10, epoch: 't9.4.5' });
    expect((await limited())?.connections).toBe(117);
    // an edit of the forward keeps what was counted
    const edited = await api.admin(
      `mutation($id: ID!) { updatePortForward(input: { portForwardId: $id, rateLimit: { total: 10, action: REJECT }, note: "x" }) { __typename ${ERROR_FIELDS} } }`,
      { id: forwardId },
    );
    expect(edited.data.updatePortForward.__typename).toBe('UpdatePortForwardPayload');
    expect(await limited()).toEqual({ connections: 117, since: first!.since });
    await report({ rateLimited: 15, epoch: 't9.4.5' });
    expect((await limited())?.connections).toBe(122);
  });

  it('refuses a bad count naming its field, and still counts the traffic', async () => {
    const outcome = await report({ rateLimited: -3, epoch: 't9.4.5' });
    expect(outcome.rejected.map((r) => r.field)).toEqual(['input.forwards.counters[0].rateLimited']);
    expect(outcome.counted).toBe(1);
    expect((await limited())?.connections).toBe(122);
  });

  it('shows the host total in /metrics', async () => {
    const response = await fetch(controller.url.replace(/\/graphql$/, '/metrics'), { headers: { authorization: `Bearer ${api.adminSecret}` } });
    const families = parsePrometheusTextFormat(await response.text()) as {
      name: string;
      type: string;
      metrics: { value: string; labels: Record<string, string> }[];
    }[];
    const family = families.find((f) => f.name === 'gatehouse_host_port_forward_rate_limited_connections_total');
    expect(family?.type).toBe('COUNTER');
    expect(family?.metrics).toEqual([{ value: '122', labels: { host_id: hostId, host: 'r-host' } }]);
  });
});
