/**
 * The reverse proxy's units without Caddy (PGlite, no root): the config sync against a fake admin
 * API (a proxy created while a run is loading Caddy is applied by one more run), the change
 * notices the services publish, the renewal decision, the access-log meter and the target
 * diagnosis. The same units against a real Caddy: proxy-manager.test.ts.
 */
import { CaddyApiError, type CaddyConfig } from 'caddy-api-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import type { WebProxyChange } from '../src/events/event-bus.js';
import { AccessLogMeter, parseCaddyLogLine, proxyOfHost } from '../src/proxy/access-log-meter.js';
import { CaddyConfigSync, type CaddyConfigClient } from '../src/proxy/caddy-config-sync.js';
import { proxySite, siteObjects } from '../src/proxy/caddy-routes.js';
import { CaddyWriter } from '../src/proxy/caddy-writer.js';
import { DAY_MS, renewalDue, summariseRenewals, type RenewalResult } from '../src/proxy/certificate-monitor.js';
import { TargetDiagnoser, stoppedInstanceDiagnosis } from '../src/proxy/target-diagnosis.js';
import { createContainer } from '../src/server.js';
import { EventBusToken } from '../src/di/tokens.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';

const SETTINGS = { listenHost: '127.0.0.1', httpPort: 1, httpsPort: 2, acme: { directoryUrl: 'https://127.0.0.1:1/dir' } };
const PROXY = 'id status statusError targetHealth { state detail } traffic { requests bytesSent bytesReceived serverErrors }';

/** Caddy's admin API as far as the sync uses it: remembers what it was given; a load can be held. */
class FakeCaddy {
  loads: CaddyConfig[] = [];
  /** Each write after the loads: method, where, and the value sent. */
  writes: { method: string; at: string; body: string }[] = [];
  hold: Promise<void> | undefined;
  loadStarted: (() => void) | undefined;
  /** A write whose value contains this is refused, as Caddy refuses a config that does not load. */
  refuse: string | undefined;

  async load(config: CaddyConfig): Promise<void> {
    this.loads.push(config);
    this.loadStarted?.();
    await this.hold;
  }
  async getById(): Promise<unknown> {
    return {};
  }
  private write(method: string, at: string, value: unknown): void {
    const body = JSON.stringify(value);
    if (this.refuse !== undefined && body.includes(this.refuse))
      throw new CaddyApiError(400, method, at, `loading new config: ${this.refuse} is not wanted`, 'fake');
    this.writes.push({ method, at, body });
  }
  async patchById(id: string, _subpath: unknown, value: unknown): Promise<void> {
    this.write('PATCH', `/id/${id}`, value);
  }
  async post(path: string[], value: unknown): Promise<void> {
    this.write('POST', path.join('/'), value);
  }
  async patch(path: string[], value: unknown): Promise<void> {
    this.write('PATCH', path.join('/'), value);
  }
  async deleteById(id: string): Promise<void> {
    this.writes.push({ method: 'DELETE', at: `/id/${id}`, body: '' });
  }
}

describe('reverse proxy units on PGlite', () => {
  let store: Store;
  let container: ReturnType<typeof createContainer>;
  let api: TestApi;
  let hostId: string;
  let vm: { id: string; address: string };

  const createProxy = async (domain: string, instanceId = vm.id) => {
    const r = await api.admin(
      `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { id } } ${ERROR_FIELDS} } }`,
      { input: { instanceId, domain, targetPort: 8080, tlsMode: 'NONE' } },
    );
    const id = r.data?.createWebProxy?.webProxy?.id as string | undefined;
    if (!id) throw new Error(JSON.stringify(r));
    return id;
  };
  const proxy = async (id: string) => (await api.admin(`query($id: ID!) { webProxy(id: $id) { ${PROXY} } }`, { id })).data!.webProxy;
  const createInstance = async (name: string) => {
    const r = await api.admin(
      `mutation($h: ID!, $n: String!) { createInstance(input: { hostId: $h, name: $n, nics: [{ network: "br-units" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${ERROR_FIELDS} } }`,
      { h: hostId, n: name },
    );
    const instance = r.data!.createInstance.instance;
    return { id: instance.id as string, address: instance.nics[0].addresses[0].address as string };
  };

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    container = createContainer(store);
    api = await createTestApi(store, container);
    hostId = await createHost(api.admin, 'units');
    await createPool(api.admin, { name: 'units', kind: 'PRIVATE', network: 'br-units', cidr: '10.77.0.0/24' });
    vm = await createInstance('vm-units');
  });
  afterAll(async () => store?.close());

  /** A config sync on the test database against a FakeCaddy. */
  const fakeSync = () => {
    const bus = container.resolve(EventBusToken);
    const caddy = new FakeCaddy();
    const logger = { info: () => {}, warn: () => {}, error: console.error };
    const options = { adminConfig: { listen: 'unix//tmp/unused.sock' }, settings: SETTINGS };
    return { bus, caddy, sync: new CaddyConfigSync(store.db, bus, logger, caddy as unknown as CaddyConfigClient, options) };
  };

  it('applies a proxy created while a sync run is loading Caddy, by one more run', async () => {
    const { bus, caddy, sync } = fakeSync();
    // the manager's wiring: every change notice asks for a sync
    const changes = bus.subscribe('webProxyChanged');
    void (async () => {
      for await (const _ of changes) void sync.sync();
    })();
    try {
      const first = await createProxy('first.units.test');
      let release!: () => void;
      caddy.hold = new Promise((r) => (release = r));
      const loading = new Promise<void>((r) => (caddy.loadStarted = r));
      const run = sync.sync();
      await loading; // the run has read the database and is inside Caddy's load
      const second = await createProxy('second.units.test');
      release();
      await run;
      // the run under way loaded only the first; the change made meanwhile is applied by the next run
      const loaded = JSON.stringify(caddy.loads[0]);
      expect(loaded).toContain('first.units.test');
      expect(loaded).not.toContain('second.units.test');
      await vi.waitFor(async () => expect((await proxy(second)).status).toBe('APPLIED'), { timeout: 5000, interval: 20 });
      // one request: the host table both domains are in, now with the second
      expect(caddy.writes).toHaveLength(1);
      expect(caddy.writes[0]).toMatchObject({ method: 'PATCH', at: '/id/gh-hosts-http-0' });
      expect(caddy.writes[0]!.body).toContain('"second.units.test"');
      expect(caddy.writes[0]!.body).toContain('"first.units.test"');
      expect(caddy.loads).toHaveLength(1);
      expect((await proxy(first)).status).toBe('APPLIED');
    } finally {
      await changes.return(undefined);
      await sync.stop();
    }
  });

  it('reads only the proxies a notice names, and fails only the proxy whose change Caddy refuses', async () => {
    const { bus, caddy, sync } = fakeSync();
    // which proxies each run read from the database (undefined: all of them)
    const reads: (string[] | undefined)[] = [];
    const internals = sync as unknown as { selectProxies: (ids?: string[]) => Promise<unknown> };
    const select = internals.selectProxies.bind(sync);
    internals.selectProxies = (ids?: string[]) => (reads.push(ids), select(ids));
    const changes = bus.subscribe('webProxyChanged');
    void (async () => {
      for await (const change of changes) void sync.changed(change);
    })();
    try {
      await sync.sync();
      expect(reads).toEqual([undefined]);
      caddy.refuse = '"refused.units.test"';
      const burst: string[] = [];
      for (let i = 0; i < 10; i++) burst.push(await createProxy(`burst-${i}.units.test`));
      const bad = await createProxy('refused.units.test');
      burst.push(await createProxy('after.units.test'));
      await vi.waitFor(async () => expect((await proxy(burst.at(-1)!)).status).toBe('APPLIED'), { timeout: 10_000, interval: 20 });
      for (const id of burst) expect((await proxy(id)).status).toBe('APPLIED');
      expect(await proxy(bad)).toMatchObject({
        status: 'FAILED',
        statusError: expect.stringContaining('loading new config: "refused.units.test" is not wanted'),
      });
      // every run after the first read only the proxies its notices named
      expect(reads.slice(1).length).toBeGreaterThan(0);
      expect(reads.slice(1).every((ids) => ids !== undefined && ids.length > 0)).toBe(true);
      expect(new Set(reads.slice(1).flat())).toEqual(new Set([...burst, bad]));
      // Caddy holds the burst's domains and not the refused one
      const table = caddy.writes.filter((w) => w.at.startsWith('/id/gh-hosts-')).at(-1)!.body;
      for (let i = 0; i < 10; i++) expect(table).toContain(`"burst-${i}.units.test"`);
      expect(table).toContain('"after.units.test"');
      expect(table).not.toContain('refused.units.test');
    } finally {
      await changes.return(undefined);
      await sync.stop();
    }
  });

  it('writes Caddy’s lists with the fewest requests: in place, appended, removed, else the list; policies before automate before their removal', async () => {
    const caddy = new FakeCaddy();
    const writer = new CaddyWriter(caddy as unknown as CaddyConfigClient);
    writer.loaded(siteObjects([]));
    const site = (id: string, domain: string, tlsMode: 'none' | 'self_signed' = 'none', port = 8080) =>
      proxySite({ id, domain, targetAddress: '10.0.0.1', targetPort: port, targetProtocol: 'http', websocket: true, tlsMode }, SETTINGS);
    const write = async (sites: ReturnType<typeof site>[]) => {
      caddy.writes = [];
      await writer.write(siteObjects(sites));
      return caddy.writes.map((w) => `${w.method} ${w.at}`);
    };
    const a = site('a', 'a.units.test');
    const w1 = site('w1', '*.w1.units.test');
    const w2 = site('w2', '*.w2.units.test');
    expect(await write([a])).toEqual(['POST apps/http/servers/gatehouse/routes']);
    expect(await write([a])).toEqual([]);
    expect(await write([site('a', 'a.units.test', 'none', 9090)])).toEqual(['PATCH /id/gh-hosts-http-0']);
    expect(await write([a, w1, w2])).toEqual(['PATCH apps/http/servers/gatehouse/routes']);
    expect(await write([a, w2])).toEqual(['DELETE /id/gh-proxy-w1']);
    // a TLS site: its policy before the table and automate; dropped after automate no longer names it
    const t = site('t', 't.units.test', 'self_signed');
    expect(await write([a, w2, t])).toEqual([
      'POST apps/tls/automation/policies',
      'PATCH apps/http/servers/gatehouse/routes',
      'PATCH apps/tls/certificates/automate',
    ]);
    // (its table, the only one of its mode, goes with it)
    expect(await write([a, w2])).toEqual(['DELETE /id/gh-hosts-http-tls2-0', 'PATCH apps/tls/certificates/automate', 'DELETE /id/gh-tls-t']);
  });

  it('announces each change Caddy must follow on webProxyChanged, in a small payload', async () => {
    const bus = container.resolve(EventBusToken);
    const seen: WebProxyChange[] = [];
    const changes = bus.subscribe('webProxyChanged');
    const reading = (async () => {
      for await (const change of changes) seen.push(change);
    })();
    const other = await createInstance('vm-gone');
    const proxyId = await createProxy('gone.units.test', other.id);
    const t = await api.admin(
      `mutation { createProxyDomainTemplate(input: { pattern: "*.tpl.units.test", targetPort: 80 }) { ... on CreateProxyDomainTemplatePayload { template { id } } ${ERROR_FIELDS} } }`,
    );
    const templateId = t.data!.createProxyDomainTemplate.template.id as string;
    await api.admin(`mutation($id: ID!) { deleteProxyDomainTemplate(input: { templateId: $id }) { __typename } }`, { id: templateId });
    const deleted = await api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: other.id });
    expect(deleted.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    await vi.waitFor(() => expect(seen.length).toBeGreaterThanOrEqual(6), { timeout: 5000, interval: 20 });
    await changes.return(undefined);
    await reading;
    expect(seen).toEqual([
      { kind: 'address', action: 'added', addressId: expect.any(String) },
      { kind: 'proxy', action: 'created', proxyId },
      { kind: 'template', action: 'created', templateId },
      { kind: 'template', action: 'deleted', templateId },
      { kind: 'proxy', action: 'deleted', proxyId },
      { kind: 'address', action: 'removed', addressId: seen[0]!.kind === 'address' ? seen[0]!.addressId : '' },
    ]);
    for (const change of seen) expect(Buffer.byteLength(JSON.stringify(change))).toBeLessThan(200);
  });

  it('counts requests per proxy from Caddy’s access log, hands on 502s and TLS errors, and writes the counts', async () => {
    const proxyId = await createProxy('meter.units.test');
    const wildId = await createProxy('*.wild.units.test');
    const badGateways: string[] = [];
    const tlsErrors: string[][] = [];
    const meter = new AccessLogMeter(store.db, { onBadGateway: (id) => badGateways.push(id), onTlsError: (names) => tlsErrors.push(names) });
    meter.setProxies([
      { id: proxyId, domain: 'meter.units.test' },
      { id: wildId, domain: '*.wild.units.test' },
    ]);
    const access = (host: string, status: number, size: number) =>
      JSON.stringify({ logger: 'http.log.access.gatehouse_access', request: { host }, status, size, bytes_read: 10, ts: 1_700_000_000 });
    meter.onLogLine(access('Meter.Units.Test.:8080', 200, 100));
    meter.onLogLine(access('meter.units.test', 502, 0));
    meter.onLogLine(access('a.wild.units.test', 200, 5));
    meter.onLogLine(access('nobody.units.test', 200, 5));
    meter.onLogLine(JSON.stringify({ level: 'error', logger: 'tls.obtain', identifier: 'acme.units.test', msg: 'could not get certificate', error: 'boom' }));
    meter.onLogLine('not json');
    expect(badGateways).toEqual([proxyId]);
    expect(tlsErrors).toEqual([['acme.units.test']]);
    await meter.flush();
    expect((await proxy(proxyId)).traffic).toMatchObject({ requests: '2', bytesSent: '100', bytesReceived: '20', serverErrors: '1' });
    expect((await proxy(wildId)).traffic).toMatchObject({ requests: '1', bytesSent: '5' });
    // a second flush adds only what came since (the API gives counters as decimal strings)
    meter.onLogLine(access('meter.units.test', 200, 1));
    await meter.flush();
    expect((await proxy(proxyId)).traffic).toMatchObject({ requests: '3', bytesSent: '101' });
  });

  it('diagnoses a target at most once per interval after 502s, and says when the instance is stopped', async () => {
    const proxyId = await createProxy('diagnosed.units.test');
    let clock = 1_000_000;
    const probed: string[] = [];
    const diagnoser = new TargetDiagnoser(
      store.db,
      { info: () => {}, warn: () => {}, error: console.error },
      {
        intervalMs: 10_000,
        now: () => clock,
        probe: async (target) => {
          probed.push(`${target.address}:${target.port}`);
          return { state: 'connection_refused', detail: `${target.address}:${target.port} refused the connection`, elapsedMs: 1 };
        },
      },
    );
    expect(diagnoser.diagnoseSoon(proxyId)).toBe(true);
    expect(diagnoser.diagnoseSoon(proxyId)).toBe(false);
    clock += 9_999;
    expect(diagnoser.diagnoseSoon(proxyId)).toBe(false);
    clock += 1;
    expect(diagnoser.diagnoseSoon(proxyId)).toBe(true);
    await vi.waitFor(() => expect(probed).toHaveLength(2), { timeout: 5000, interval: 20 });
    expect(probed).toEqual([`${vm.address}:8080`, `${vm.address}:8080`]);
    await vi.waitFor(async () => expect((await proxy(proxyId)).targetHealth).toMatchObject({ state: 'CONNECTION_REFUSED' }), { timeout: 5000, interval: 20 });

    const report = await api.admin(`mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`, {
      input: { hostId, pluginId: 'test', agentVersion: '0.0.0', discoveredInstances: [{ externalId: 'x-units', name: 'vm-units', running: false, nics: [] }] },
    });
    expect(report.data!.reportHostStatus.__typename).toBe('ReportHostStatusPayload');
    expect(await diagnoser.diagnose(proxyId)).toMatchObject({ state: 'instance_stopped' });
    expect(probed).toHaveLength(2); // no probe for a stopped instance
    expect((await proxy(proxyId)).targetHealth).toMatchObject({ state: 'INSTANCE_STOPPED', detail: expect.stringContaining('vm-units') });
  });
});

describe('reverse proxy decisions', () => {
  it('renews a certificate when none is served or it expires within the window; Caddy’s internal ones past two thirds of their life', () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    const cert = (fromHours: number, toHours: number) => ({ notBefore: new Date(now + fromHours * 3_600_000), notAfter: new Date(now + toHours * 3_600_000) });
    const window = 30 * DAY_MS;
    expect(renewalDue(undefined, 'acme', window, now)).toBe(true);
    expect(renewalDue(cert(-24 * 60, 24 * 20), 'acme', window, now)).toBe(true);
    expect(renewalDue(cert(-24 * 30, 24 * 60), 'acme', window, now)).toBe(false);
    expect(renewalDue(cert(-24 * 30, 24 * 20), 'uploaded', window, now)).toBe(true);
    // a 12-hour internal certificate: not due with 5 h left (over a third), due with 3 h left
    expect(renewalDue(cert(-7, 5), 'self_signed', window, now)).toBe(false);
    expect(renewalDue(cert(-9, 3), 'self_signed', window, now)).toBe(true);
    const results = (['ok', 'renewed', 'upload_needed', 'ok'] as const).map((outcome) => ({ outcome }) as RenewalResult);
    expect(summariseRenewals(results)).toBe('4 certificates: 1 renewed, 0 failed, 1 uploaded ones to replace, 2 not due');
  });

  it('reads Caddy’s log lines and finds the proxy of a Host', () => {
    expect(parseCaddyLogLine('{"logger":"http.log.access.other","request":{"host":"a"}}')).toBeUndefined();
    expect(parseCaddyLogLine('null')).toBeUndefined();
    expect(parseCaddyLogLine('{"logger":"http.log.access.gatehouse_access","request":{"host":"X.Test.:443"},"status":502}', new Date(5))).toEqual({
      kind: 'access',
      host: 'x.test',
      status: 502,
      bytesSent: 0,
      bytesReceived: 0,
      at: new Date(5),
    });
    const domains = new Map([
      ['a.test', 'p1'],
      ['*.w.test', 'p2'],
    ]);
    expect([proxyOfHost(domains, 'a.test'), proxyOfHost(domains, 'x.w.test'), proxyOfHost(domains, 'y.x.w.test'), proxyOfHost(domains, 'test')]).toEqual([
      'p1',
      'p2',
      undefined,
      undefined,
    ]);
  });

  it('says an instance is stopped only when its host’s agent reported it not running', () => {
    const now = new Date(0);
    const bound = { name: 'vm', externalId: 'x1' };
    expect(stoppedInstanceDiagnosis([{ externalId: 'x1', name: 'renamed', running: false }], bound, now)?.state).toBe('instance_stopped');
    expect(stoppedInstanceDiagnosis([{ externalId: 'x2', name: 'vm', running: false }], bound, now)).toBeUndefined();
    expect(stoppedInstanceDiagnosis([{ name: 'vm', running: false }], { name: 'vm', externalId: null }, now)?.state).toBe('instance_stopped');
    expect(stoppedInstanceDiagnosis([{ externalId: 'x1', name: 'vm', running: true }], bound, now)).toBeUndefined();
    expect(stoppedInstanceDiagnosis(undefined, bound, now)).toBeUndefined();
  });
});
