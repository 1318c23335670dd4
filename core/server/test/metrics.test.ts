/**
 * `/metrics`: refused without a token and with non-admin tokens on the API port, served to an
 * admin token and without one on the separate metrics listener, and parsed by a real Prometheus
 * text-format parser: NIC counters equal to the bytes the controller counted from agent reports,
 * per-host gauges, agents online, revision lag, the apply-latency histogram moving when an agent
 * reports a revision applied, and the HTTP and GraphQL request counters.
 */
import { REPORT_HOST_STATUS_MUTATION, REPORT_TRAFFIC_MUTATION, type NicTrafficInput } from '@gatehouse/agent-protocol';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createNics } from '../src/testing/fixtures.js';

interface Family {
  name: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }[];
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

  it('observes the apply latency when the agent reports the desired revision applied, and the revision lag drops to 0', async () => {
    const histogram = async () => {
      const parsed = families(await (await scrape(api.adminSecret)).text());
      const family = parsed.get('gatehouse_agent_apply_duration_seconds');
      expect(family?.type).toBe('HISTOGRAM');
      const metric = family!.metrics[0]!;
      return {
        count: Number(metric.count),
        sum: Number(metric.sum),
        // by bound (the parser's object lists integer-like bounds first)
        buckets: Object.entries(metric.buckets ?? {})
          .map(([le, n]) => [le, Number(n)] as const)
          .sort((a, b) => (a[0] === '+Inf' ? Infinity : Number(a[0])) - (b[0] === '+Inf' ? Infinity : Number(b[0]))),
        lag: value(parsed.get('gatehouse_host_desired_revision_lag'), { host_id: hostId }),
      };
    };
    const before = await histogram();
    expect(before.lag).toBeGreaterThan(0);
    // one more change: a revision committed while the metrics listen, then applied by the agent
    await createNics(api.admin, hostId, (await api.clientFor(tenantSecret)('{ me { id } }')).data.me.id, 'vm-m2', 'br0', 1);
    const revision = (await api.admin(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).data.host.desiredRevision as number;
    await new Promise((r) => setTimeout(r, 50)); // a measurable wait between the commit and the apply
    const applied = await api.clientFor(agentSecret)(REPORT_HOST_STATUS_MUTATION, {
      input: { hostId, appliedRevision: revision, agentVersion: '1.0.0', pluginId: 'metrics-test' },
    });
    expect(applied.data.reportHostStatus.__typename).toBe('ReportHostStatusPayload');

    const deadline = Date.now() + 10_000;
    let after = await histogram();
    while (after.count === before.count && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      after = await histogram();
    }
    // every revision committed since the controller started was applied at once: each observed once
    expect(after.count).toBeGreaterThan(before.count);
    expect(after.count).toBeLessThanOrEqual(revision);
    expect(after.sum).toBeGreaterThan(before.sum);
    const inf = after.buckets.find(([le]) => le === '+Inf');
    expect(inf?.[1]).toBe(after.count);
    // cumulative buckets: never decreasing, and the one above 50 ms took the revision that waited 50 ms
    const counts = after.buckets.map(([, n]) => n);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(after.buckets.map(([le]) => le)).toEqual(['0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '300', '+Inf']);
    expect(after.buckets.find(([le]) => le === '0.05')![1]).toBeLessThan(after.count);
    expect(after.lag).toBe(0);
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
