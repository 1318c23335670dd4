/**
 * `/metrics`: refused without a token and with non-admin tokens on the API port, served to an
 * admin token and without one on the separate metrics listener, and parsed by a real Prometheus
 * text-format parser: NIC counters equal to the bytes the controller counted from agent reports,
 * per-host gauges, agents online, revision lag, and the HTTP and GraphQL request counters.
 */
import { REPORT_TRAFFIC_MUTATION, type NicTrafficInput } from '@gatehouse/agent-protocol';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';

interface Family {
  name: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string }[];
}

describe('/metrics', () => {
  let controller: Controller;
  let api: TestApi;
  let hostId: string;
  let nics: string[];
  let agentSecret: string;
  let tenantSecret: string;

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false, metricsListen: { host: '127.0.0.1', port: 0 } });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'm-host');
    const tenant = await api.tenant('m-alice');
    tenantSecret = tenant.secret;
    nics = await createNics(api.admin, hostId, tenant.id, 'vm-m', 'br0', 2);
    const adminId = (await api.admin('{ me { id } }')).data.me.id;
    const token = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: adminId, h: hostId },
    );
    agentSecret = token.data.createApiToken.created.secret;
    const agent: Client = api.clientFor(agentSecret);
    let sequence = 0;
    const send = async (counters: NicTrafficInput[]) => {
      const r = await agent(REPORT_TRAFFIC_MUTATION.replace('... on Error { message }', ERROR_FIELDS), {
        input: { hostId, bootId: 'boot-m', sequence: ++sequence, nics: { at: new Date().toISOString(), intervalMs: 1000, counters } },
      });
      expect(r.data.reportTraffic.outcome.rejected).toEqual([]);
    };
    const nic = (nicId: string, rx: number, tx: number): NicTrafficInput => ({
      nicId,
      epoch: 'if4',
      rxBytes: rx,
      rxPackets: rx / 100,
      txBytes: tx,
      txPackets: tx / 100,
    });
    await send([nic(nics[0]!, 1000, 500), nic(nics[1]!, 0, 0)]);
    await send([nic(nics[0]!, 101_000, 20_500), nic(nics[1]!, 3000, 700)]);
  });
  afterAll(async () => {
    await controller?.close();
  });

  const metricsUrl = () => controller.url.replace(/\/graphql$/, '/metrics');
  const scrape = (secret?: string) => fetch(metricsUrl(), { headers: secret ? { authorization: `Bearer ${secret}` } : {} });
  const families = (text: string) => new Map((parsePrometheusTextFormat(text) as Family[]).map((f) => [f.name, f]));
  const value = (f: Family | undefined, labels: Record<string, string> = {}) =>
    Number(f?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value);

  it('refuses a scrape without a token, with a user token and with an agent token', async () => {
    const none = await scrape();
    expect(none.status).toBe(401);
    expect(await none.text()).not.toContain('gatehouse_');
    expect((await scrape('gh_not_a_token')).status).toBe(401);
    expect((await scrape(tenantSecret)).status).toBe(403);
    expect((await scrape(agentSecret)).status).toBe(403);
  });

  it('serves an admin the metrics in the Prometheus text format', async () => {
    // a query and a refused mutation over HTTP, so the request counters have something
    await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${api.adminSecret}` },
      body: JSON.stringify({ query: '{ me { id } }' }),
    });
    const response = await scrape(api.adminSecret);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const parsed = families(await response.text());
    const nicLabels = { host_id: hostId, host: 'm-host', instance: 'vm-m', nic_id: nics[0]! };
    const receive = parsed.get('gatehouse_instance_network_receive_bytes_total');
    expect(receive?.type).toBe('COUNTER');
    expect(value(receive, nicLabels)).toBe(100_000);
    expect(value(parsed.get('gatehouse_instance_network_transmit_bytes_total'), nicLabels)).toBe(20_000);
    expect(value(parsed.get('gatehouse_instance_network_receive_packets_total'), nicLabels)).toBe(1000);
    expect(value(parsed.get('gatehouse_instance_network_transmit_packets_total'), { nic_id: nics[1]! })).toBe(7);
    expect(value(parsed.get('gatehouse_host_port_forwards'), { host_id: hostId })).toBe(0);
    expect(value(parsed.get('gatehouse_host_web_proxies'), { host_id: hostId })).toBe(0);
    expect(value(parsed.get('gatehouse_agents_online'))).toBe(0);
    expect(value(parsed.get('gatehouse_host_agent_online'), { host_id: hostId })).toBe(0);
    // instances and NICs were created and no agent ever applied a revision
    expect(value(parsed.get('gatehouse_host_desired_revision_lag'), { host_id: hostId })).toBeGreaterThan(0);
    expect(parsed.get('gatehouse_agent_apply_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(value(parsed.get('gatehouse_http_requests_total'), { method: 'POST', route: 'graphql', code: '200' })).toBeGreaterThanOrEqual(1);
    // the in-process API's operations count too: the reports were mutations
    expect(value(parsed.get('gatehouse_graphql_operations_total'), { type: 'mutation', result: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(value(parsed.get('gatehouse_graphql_operations_total'), { type: 'query', result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(parsed.get('gatehouse_process_resident_memory_bytes')?.type).toBe('GAUGE');
  });

  it('serves the same metrics without a token on the separate listener, and nothing else there', async () => {
    expect(controller.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const response = await fetch(controller.metricsUrl!);
    expect(response.status).toBe(200);
    const parsed = families(await response.text());
    expect(value(parsed.get('gatehouse_instance_network_receive_bytes_total'), { nic_id: nics[1]! })).toBe(3000);
    expect((await fetch(controller.metricsUrl!.replace('/metrics', '/graphql'))).status).toBe(404);
  });
});
