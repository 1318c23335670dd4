/**
 * The reverse proxy end to end on real systems: a controller (PGlite) running its own Caddy
 * (Debian's 2.6.2) on test ports, pebble as the ACME CA, and web backends inside a network
 * namespace whose addresses come from a Gatehouse pool. Everything goes through the GraphQL API;
 * requests go to Caddy on 127.0.0.1 with the Host / SNI of each proxy.
 */
import { caddyAvailable, freePort, pebbleAvailable, startPebble, type PebbleProcess } from 'caddy-api-client/testing';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { openStore, type Store } from '../src/db/database.js';
import { webProxies } from '../src/db/schema.js';
import { CaddySupervisor } from '../src/proxy/caddy-process.js';
import { ProxyManager } from '../src/proxy/proxy-manager.js';
import { createContainer } from '../src/server.js';
import type { ObjectStatusChange } from '../src/events/event-payloads.js';
import { ObjectStatusService } from '../src/services/object-status-service.js';
import { EventBusToken } from '../src/di/tokens.js';
import { ProxyManagerToken } from '../src/proxy/proxy-manager-token.js';
import { ERROR_FIELDS, createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { selfSignedCertificate } from './support/certificates.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { REQUIRE_SYSTEM } from '../src/testing/stores.js';

const BACKEND = fileURLToPath(new URL('./support/proxy-backend.mjs', import.meta.url));
const ready = (await caddyAvailable()) && (await pebbleAvailable()) && (await labAvailable());

const PROXY = `id domain status statusError targetAddress
  certificateStatus { issuer notAfter lastError checkedAt }
  targetHealth { state detail checkedAt }
  traffic { requests bytesSent bytesReceived serverErrors lastRequestAt }`;
const CREATE = `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { ${PROXY} } } ${ERROR_FIELDS} } }`;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A plain HTTP request to Caddy's HTTP port with a Host header. */
function httpRequest(port: number, host: string, path = '/', body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', headers: { host }, agent: false, timeout: 15_000 }, (res) => {
      let data = '';
      res.on('data', (d: Buffer) => (data += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** An HTTPS request to Caddy's HTTPS port with SNI and Host set to `host`; resolves the reply and the served certificate. */
function httpsRequest(port: number, host: string, path = '/'): Promise<Reply & { cert: X509Certificate }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: host, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const cert = socket.getPeerX509Certificate()!;
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      let raw = '';
      socket.on('data', (d: Buffer) => (raw += d.toString()));
      socket.on('end', () => {
        const [head = '', ...rest] = raw.split('\r\n\r\n');
        const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0);
        let body = rest.join('\r\n\r\n');
        // chunked bodies (Caddy streams the backend's): keep only the payload
        if (/transfer-encoding: chunked/i.test(head)) body = body.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '');
        resolve({ status, headers: {}, body, cert });
      });
    });
    socket.setTimeout(15_000, () => socket.destroy(new Error('timeout')));
    socket.on('error', reject);
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!ready && !REQUIRE_SYSTEM)('reverse proxy on a real Caddy, with pebble and a network namespace', () => {
  let store: Store;
  let container: ReturnType<typeof createContainer>;
  let api: TestApi;
  let manager: ProxyManager;
  let caddy: CaddySupervisor;
  let pebble: PebbleProcess;
  let lab: NetnsLab;
  let ns: LabNamespace;
  let backend: ChildProcess | undefined;
  let dir: string;
  let httpPort: number;
  let httpsPort: number;
  let rootIf: string;
  let hostId: string;
  let vm1: string;
  let vm2: string;
  let ann: { client: Client; id: string };
  let annVm: string;
  const proxies: Record<string, string> = {};
  const uploaded = selfSignedCertificate(['up.gh.test']);

  const admin = (q: string, v?: Record<string, unknown>) => api.admin(q, v);
  const proxyById = async (id: string, client: Client = api.admin) =>
    (await client(`query($id: ID!) { webProxy(id: $id) { ${PROXY} } }`, { id })).data!.webProxy;
  const create = async (input: Record<string, unknown>, client: Client = api.admin) => {
    const r = await client(CREATE, { input });
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data!.createWebProxy;
  };
  /** Creates a proxy and waits until Caddy applied it. */
  const serve = async (name: string, input: Record<string, unknown>, client: Client = api.admin) => {
    const r = await create(input, client);
    if (r.__typename !== 'CreateWebProxyPayload') throw new Error(JSON.stringify(r));
    proxies[name] = r.webProxy.id;
    await manager.sync();
    return until(`${input.domain} applied`, async () => {
      const p = await proxyById(r.webProxy.id, client);
      if (p.status === 'FAILED') throw new Error(`FAILED: ${p.statusError}`);
      return p.status === 'APPLIED' && p;
    });
  };
  const json = (r: Reply) => JSON.parse(r.body) as Record<string, unknown>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-proxy-test-'));
    httpPort = await freePort();
    httpsPort = await freePort();
    pebble = await startPebble({ httpPort });

    // the instances' network: a namespace holding both instances' addresses, reached from here over a veth
    lab = new NetnsLab();
    ns = await lab.namespace('web');
    rootIf = `${lab.prefix}r`;
    const { run } = await import('@gatehouse/sdk');
    await run('ip', ['link', 'add', rootIf, 'type', 'veth', 'peer', 'name', `${lab.prefix}i`, 'netns', ns.name]);
    await run('ip', ['addr', 'add', '10.251.0.254/24', 'dev', rootIf]);
    await run('ip', ['link', 'set', rootIf, 'up']);
    await ns.exec('ip', ['addr', 'add', '10.251.0.1/24', 'dev', `${lab.prefix}i`]);
    await ns.exec('ip', ['addr', 'add', '10.251.0.2/24', 'dev', `${lab.prefix}i`]);
    await ns.exec('ip', ['addr', 'add', '10.251.0.3/24', 'dev', `${lab.prefix}i`]);
    await ns.exec('ip', ['link', 'set', `${lab.prefix}i`, 'up']);
    const backendTls = selfSignedCertificate(['backend.internal']);
    writeFileSync(join(dir, 'backend-cert.pem'), backendTls.certificatePem);
    writeFileSync(join(dir, 'backend-key.pem'), backendTls.privateKeyPem);
    backend = spawn('ip', ['netns', 'exec', ns.name, process.execPath, BACKEND, join(dir, 'backend-cert.pem'), join(dir, 'backend-key.pem')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      backend!.stdout!.once('data', () => resolve());
      backend!.once('exit', (code) => reject(new Error(`backend exited with ${code}`)));
    });

    store = await openStore({ kind: 'pglite' });
    container = createContainer(store);
    caddy = new CaddySupervisor(join(dir, 'caddy'), { info: () => {}, warn: () => {}, error: console.error });
    caddy.start();
    manager = new ProxyManager(
      store.db,
      container.resolve(EventBusToken),
      { info: () => {}, warn: () => {}, error: console.error },
      {
        admin: { socketPath: caddy.socketPath },
        adminConfig: caddy.adminConfig,
        settings: {
          listenHost: '127.0.0.1',
          httpPort,
          httpsPort,
          acme: { directoryUrl: pebble.directoryUrl, trustedRootsPemFiles: [pebble.caCertFile] },
        },
        logSocketPath: join(dir, 'caddy-log.sock'),
        checkIntervalMs: 300,
        trafficFlushMs: 200,
        certificateRetryMs: 250,
        probeTimeoutMs: 1000,
        diagnoseIntervalMs: 0,
      },
    );
    container.registerInstance(ProxyManagerToken, manager);
    api = await createTestApi(store, container);
    await until('Caddy admin socket', async () => (await caddy.pid) && (await manager.client.getConfig([])) && true);
    await manager.start();

    hostId = await createHost(api.admin, 'web-host');
    await createPool(api.admin, { name: 'web', kind: 'PRIVATE', network: 'br-web', cidr: '10.251.0.0/24', gateway: '10.251.0.254' });
    const mk = async (name: string, ownerId?: string) =>
      (
        await admin(
          `mutation($h: ID!, $n: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-web" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${ERROR_FIELDS} } }`,
          { h: hostId, n: name, o: ownerId },
        )
      ).data!.createInstance.instance;
    const i1 = await mk('vm1');
    const i2 = await mk('vm2');
    vm1 = i1.id;
    vm2 = i2.id;
    expect([i1.nics[0].addresses[0].address, i2.nics[0].addresses[0].address]).toEqual(['10.251.0.1', '10.251.0.2']);
    ann = await api.tenant('ann');
    annVm = (await mk('Ann Box', ann.id)).id;
  }, 120_000);

  afterAll(async () => {
    await manager?.stop();
    await caddy?.stop();
    await pebble?.stop();
    if (backend?.exitCode === null) backend.kill('SIGTERM');
    await lab?.cleanup();
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("publishes a proxy's status changes to its owner's objectStatusChanged stream", async () => {
    const ownerStream = container
      .resolve(ObjectStatusService)
      .watch({ userId: ann.id, role: 'user', scope: 'user', tokenId: 't', hostId: null, userName: 'ann', requestId: 'r' });
    const seen: ObjectStatusChange[] = [];
    const reading = (async () => {
      for await (const change of ownerStream) {
        seen.push(change);
        if (change.status === 'applied') return;
      }
    })();
    const r = await create({ instanceId: annVm, domain: 'status.ann-own.test', targetPort: 8080, tlsMode: 'NONE' }, ann.client);
    await manager.sync();
    await Promise.race([reading, new Promise((r) => setTimeout(r, 10_000))]);
    await ownerStream.return(undefined);
    expect(seen).toContainEqual(
      expect.objectContaining({ objectType: 'web_proxy', objectId: r.webProxy.id, ownerId: ann.id, hostId, status: 'applied', error: null }),
    );
    await ann.client(`mutation($id: ID!) { deleteWebProxy(input: { webProxyId: $id }) { __typename } }`, { id: r.webProxy.id });
  });

  it('sends each domain by Host to its instance in the namespace, with X-Forwarded headers', async () => {
    await serve('one', { instanceId: vm1, domain: 'one.gh.test', targetPort: 8080, tlsMode: 'NONE' });
    await serve('two', { instanceId: vm2, domain: 'Two.GH.test.', targetPort: 8080, tlsMode: 'NONE' });
    expect(json(await httpRequest(httpPort, 'one.gh.test'))).toMatchObject({
      local: '10.251.0.1',
      host: 'one.gh.test',
      xff: '127.0.0.1',
      proto: 'http',
      xhost: 'one.gh.test',
    });
    expect(json(await httpRequest(httpPort, 'two.gh.test'))).toMatchObject({ local: '10.251.0.2' });
    // Caddy answers a domain nobody serves with an empty 200: no backend is reached
    expect((await httpRequest(httpPort, 'three.gh.test')).body).toBe('');
  });

  it('serves a self-signed certificate from Caddy’s internal CA and redirects plain HTTP to HTTPS', async () => {
    const p = await serve('self', { instanceId: vm1, domain: 'self.gh.test', targetPort: 8080, tlsMode: 'SELF_SIGNED' });
    const r = await until('self-signed certificate served', async () => {
      const reply = await httpsRequest(httpsPort, 'self.gh.test');
      return reply.status === 200 && reply;
    });
    expect(r.cert.checkHost('self.gh.test')).toBe('self.gh.test');
    expect(r.cert.issuer).toMatch(/Caddy Local Authority/);
    expect(json(r)).toMatchObject({ local: '10.251.0.1', proto: 'https' });
    const redirect = await httpRequest(httpPort, 'self.gh.test', '/a?b=1');
    expect(redirect.status).toBe(308);
    expect(redirect.headers.location).toBe(`https://self.gh.test:${httpsPort}/a?b=1`);
    const status = await until('certificate status recorded', async () => (await proxyById(p.id)).certificateStatus.issuer && (await proxyById(p.id)));
    expect(status.certificateStatus).toMatchObject({ issuer: expect.stringMatching(/Caddy Local Authority/), lastError: null });
    expect(new Date(status.certificateStatus.notAfter).getTime()).toBeGreaterThan(Date.now());
  });

  it('serves an uploaded certificate as uploaded, and never returns its key', async () => {
    const p = await serve('up', { instanceId: vm2, domain: 'up.gh.test', targetPort: 8080, tlsMode: 'UPLOADED', ...uploaded });
    const r = await until('uploaded certificate served', async () => {
      const reply = await httpsRequest(httpsPort, 'up.gh.test');
      return reply.status === 200 && reply;
    });
    expect(r.cert.fingerprint256).toBe(new X509Certificate(uploaded.certificatePem).fingerprint256);
    expect(json(r)).toMatchObject({ local: '10.251.0.2' });
    const all = await admin(`query($id: ID!) { webProxy(id: $id) { ${PROXY} certificate { subject } } }`, { id: p.id });
    expect(JSON.stringify(all)).not.toContain('PRIVATE KEY');
  });

  it('obtains a certificate from the ACME CA (pebble) and shows issuer and expiry', async () => {
    const p = await serve('acme', { instanceId: vm1, domain: 'acme.gh.test', targetPort: 8080, tlsMode: 'ACME' });
    const r = await until(
      'ACME certificate served',
      async () => {
        const reply = await httpsRequest(httpsPort, 'acme.gh.test');
        return reply.status === 200 && reply;
      },
      60_000,
    );
    expect(r.cert.issuer).toMatch(/Pebble/);
    // the chain verifies against pebble's root, not against this machine's trust store
    expect(r.cert.checkHost('acme.gh.test')).toBe('acme.gh.test');
    const status = await until('ACME status recorded', async () => {
      const now = await proxyById(p.id);
      return now.certificateStatus.issuer && now;
    });
    expect(status.certificateStatus.issuer).toMatch(/Pebble/);
    expect(status.certificateStatus.lastError).toBeNull();
  }, 90_000);

  it('serves wildcard proxies and per-user wildcard template sub-domains', async () => {
    await serve('wild', { instanceId: vm2, domain: '*.apps.gh.test', targetPort: 8080, tlsMode: 'SELF_SIGNED' });
    expect(json(await httpsRequest(httpsPort, 'anything.apps.gh.test'))).toMatchObject({ local: '10.251.0.2', xhost: 'anything.apps.gh.test' });
    const t = await ann.client(`mutation { createProxyDomainTemplate(input: { pattern: "*.ann.gh.test", targetPort: 8080 }) { __typename ${ERROR_FIELDS} } }`);
    expect(t.data!.createProxyDomainTemplate.__typename).toBe('CreateProxyDomainTemplatePayload');
    await manager.sync();
    // "Ann Box" → ann-box.ann.gh.test, on Ann's instance (10.251.0.3), over HTTPS with the template's wildcard certificate
    const r = await until('template sub-domain served', async () => {
      const reply = await httpsRequest(httpsPort, 'ann-box.ann.gh.test');
      return reply.status === 200 && reply;
    });
    expect(json(r)).toMatchObject({ local: '10.251.0.3' });
    expect(r.cert.checkHost('ann-box.ann.gh.test')).toBeTruthy();
    // a name under the template that is no instance of Ann's reaches nothing
    expect((await httpRequest(httpPort, 'vm1.ann.gh.test')).body).toBe('');
    void annVm;
  });

  it('passes a WebSocket echo through the proxy', async () => {
    await serve('ws', { instanceId: vm2, domain: 'ws.gh.test', targetPort: 8081, tlsMode: 'NONE' });
    const socket = new WebSocket(`ws://127.0.0.1:${httpPort}/`, { headers: { host: 'ws.gh.test' } });
    const reply = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    socket.close();
    expect(reply).toBe('echo:ping via 10.251.0.2');
  });

  it('speaks HTTPS to a target that serves HTTPS', async () => {
    await serve('tls-target', { instanceId: vm1, domain: 'secure-backend.gh.test', targetPort: 8443, targetProtocol: 'HTTPS', tlsMode: 'NONE' });
    expect(json(await httpRequest(httpPort, 'secure-backend.gh.test'))).toMatchObject({ local: '10.251.0.1', tls: true });
  });

  it('counts requests and bytes per proxy from the access log', async () => {
    const before = (await proxyById(proxies.one!)).traffic;
    for (let i = 0; i < 5; i++) await httpRequest(httpPort, 'one.gh.test', '/', 'x'.repeat(1000));
    const after = await until('traffic flushed', async () => {
      const t = (await proxyById(proxies.one!)).traffic;
      return Number(t.requests) >= Number(before.requests) + 5 && t;
    });
    expect(Number(after.requests) - Number(before.requests)).toBe(5);
    // each reply is the backend's JSON (over 100 bytes); each request carried 1000 bytes
    expect(Number(after.bytesSent) - Number(before.bytesSent)).toBeGreaterThan(500);
    expect(Number(after.serverErrors)).toBe(0);
    expect(after.lastRequestAt).not.toBeNull();
  });

  describe('502 diagnosis', () => {
    it('says the port is closed (connection refused)', async () => {
      const p = await serve('closed', { instanceId: vm1, domain: 'closed.gh.test', targetPort: 9999, tlsMode: 'NONE' });
      expect((await httpRequest(httpPort, 'closed.gh.test')).status).toBe(502);
      const health = await until('diagnosis', async () => (await proxyById(p.id)).targetHealth);
      expect(health).toMatchObject({ state: 'CONNECTION_REFUSED', detail: expect.stringContaining('10.251.0.1:9999') });
      const t = await until('5xx counted', async () => Number((await proxyById(p.id)).traffic.serverErrors) >= 1 && (await proxyById(p.id)).traffic);
      expect(Number(t.serverErrors)).toBe(1);
    });

    it('says the target speaks TLS where the proxy sends HTTP', async () => {
      const p = await serve('mismatch', { instanceId: vm2, domain: 'mismatch.gh.test', targetPort: 8443, tlsMode: 'NONE' });
      const reply = await httpRequest(httpPort, 'mismatch.gh.test');
      expect(reply.status).toBeGreaterThanOrEqual(400);
      const r = await admin(
        `mutation($id: ID!) { diagnoseWebProxy(input: { webProxyId: $id }) { ... on DiagnoseWebProxyPayload { webProxy { targetHealth { state detail } } } } }`,
        {
          id: p.id,
        },
      );
      expect(r.data!.diagnoseWebProxy.webProxy.targetHealth).toMatchObject({ state: 'TLS_MISMATCH', detail: expect.stringContaining('10.251.0.2:8443') });
    });

    it('says packets are dropped (timeout)', async () => {
      const p = await serve('dropped', { instanceId: vm1, domain: 'dropped.gh.test', targetPort: 7777, tlsMode: 'NONE' });
      const ruleset = {
        nftables: [
          { add: { table: { family: 'inet', name: 'ghproxytest' } } },
          { add: { chain: { family: 'inet', table: 'ghproxytest', name: 'in', type: 'filter', hook: 'input', prio: 0, policy: 'accept' } } },
          {
            add: {
              rule: {
                family: 'inet',
                table: 'ghproxytest',
                chain: 'in',
                expr: [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 7777 } }, { drop: null }],
              },
            },
          },
        ],
      };
      writeFileSync(join(dir, 'drop.json'), JSON.stringify(ruleset));
      await ns.exec('nft', ['-j', '-f', join(dir, 'drop.json')]);
      const r = await admin(
        `mutation($id: ID!) { diagnoseWebProxy(input: { webProxyId: $id }) { ... on DiagnoseWebProxyPayload { webProxy { targetHealth { state detail } } } } }`,
        {
          id: p.id,
        },
      );
      expect(r.data!.diagnoseWebProxy.webProxy.targetHealth.state).toBe('TIMEOUT');
    });

    it("says the instance is stopped when its host's agent reports it so", async () => {
      const report = await admin(`mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: { hostId, pluginId: 'test', agentVersion: '0.0.0', discoveredInstances: [{ externalId: 'x-vm1', name: 'vm1', running: false, nics: [] }] },
      });
      expect(report.errors).toBeUndefined();
      const r = await admin(
        `mutation($id: ID!) { diagnoseWebProxy(input: { webProxyId: $id }) { ... on DiagnoseWebProxyPayload { webProxy { targetHealth { state detail } } } } }`,
        {
          id: proxies.closed,
        },
      );
      expect(r.data!.diagnoseWebProxy.webProxy.targetHealth).toMatchObject({ state: 'INSTANCE_STOPPED', detail: expect.stringContaining('vm1') });
    });
  });

  it('refuses a target that is the controller itself or another tenant’s address', async () => {
    // an instance address that this machine also holds
    await admin(`mutation { createIpPool(input: { name: "self", kind: PRIVATE, network: "br-self", cidr: "10.252.0.0/24" }) { __typename } }`);
    const self = (
      await admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "selfish", nics: [{ network: "br-self" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } } }`,
        { h: hostId },
      )
    ).data!.createInstance.instance;
    const { run } = await import('@gatehouse/sdk');
    await run('ip', ['addr', 'add', `${self.nics[0].addresses[0].address}/32`, 'dev', rootIf]);
    const before = await api.snapshot();
    expect(await create({ instanceId: self.id, domain: 'self-target.gh.test', targetPort: 80, tlsMode: 'NONE' })).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.instanceId',
      message: expect.stringContaining('controller itself'),
    });
    expect(await create({ instanceId: vm1, domain: 'steal.gh.test', targetPort: 80, targetAddress: '10.251.0.3', tlsMode: 'NONE' })).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.targetAddress',
    });
    expect(await create({ instanceId: vm1, domain: 'steal2.gh.test', targetPort: 80, tlsMode: 'NONE' }, ann.client)).toMatchObject({
      code: 'NOT_FOUND',
      field: 'input.instanceId',
    });
    expect(await api.snapshot()).toEqual(before);
  });

  it('marks a proxy Caddy refuses FAILED with Caddy’s message while the others keep serving', async () => {
    // a certificate Caddy cannot load (changed behind the API's back: the API would refuse it)
    const p = await serve('broken', {
      instanceId: vm2,
      domain: 'broken.gh.test',
      targetPort: 8080,
      tlsMode: 'UPLOADED',
      ...selfSignedCertificate(['broken.gh.test']),
    });
    await store.db
      .update(webProxies)
      .set({ certificatePem: '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n' })
      .where(eq(webProxies.id, p.id));
    await manager.sync();
    const failed = await proxyById(p.id);
    expect(failed.status).toBe('FAILED');
    expect(failed.statusError).toMatch(/certificate/i);
    // the previous version keeps serving, and so does every other proxy
    expect(json(await httpsRequest(httpsPort, 'broken.gh.test'))).toMatchObject({ local: '10.251.0.2' });
    expect(json(await httpRequest(httpPort, 'one.gh.test'))).toMatchObject({ local: '10.251.0.1' });
    expect((await proxyById(proxies.one!)).status).toBe('APPLIED');
    // deleting it removes its route
    await admin(`mutation($id: ID!) { deleteWebProxy(input: { webProxyId: $id }) { __typename } }`, { id: p.id });
    await manager.sync();
    expect((await httpRequest(httpPort, 'broken.gh.test')).body).toBe('');
  });

  it('loses nothing when Caddy is killed: the restarted Caddy gets every route and certificate back', async () => {
    const acmeBefore = (await httpsRequest(httpsPort, 'acme.gh.test')).cert.fingerprint256;
    const pid = caddy.pid!;
    process.kill(pid, 'SIGKILL');
    await until('Caddy restarted', async () => caddy.pid !== undefined && caddy.pid !== pid);
    const back = await until(
      'routes restored',
      async () => {
        const r = await httpRequest(httpPort, 'one.gh.test');
        return r.status === 200 && r.body !== '' && r;
      },
      30_000,
    );
    expect(json(back)).toMatchObject({ local: '10.251.0.1' });
    expect(json(await httpRequest(httpPort, 'two.gh.test'))).toMatchObject({ local: '10.251.0.2' });
    const up = await until('uploaded certificate back', async () => {
      const r = await httpsRequest(httpsPort, 'up.gh.test');
      return r.status === 200 && r;
    });
    expect(up.cert.fingerprint256).toBe(new X509Certificate(uploaded.certificatePem).fingerprint256);
    // the ACME certificate comes from Caddy's storage, not from a new order
    const acme = await until('ACME certificate back', async () => {
      const r = await httpsRequest(httpsPort, 'acme.gh.test');
      return r.status === 200 && r;
    });
    expect(acme.cert.fingerprint256).toBe(acmeBefore);
    expect(json(await httpsRequest(httpsPort, 'ann-box.ann.gh.test'))).toMatchObject({ local: '10.251.0.3' });
    const statuses = await admin(`{ webProxies { edges { node { domain status } } } }`);
    expect(statuses.data!.webProxies.edges.map((e: { node: { status: string } }) => e.node.status)).not.toContain('FAILED');
  }, 60_000);

  it('shows proxies PENDING with the reason while Caddy is down, and serves them again when it is back', async () => {
    await caddy.stop();
    await manager.check();
    const down = await proxyById(proxies.one!);
    expect(down).toMatchObject({ status: 'PENDING', statusError: expect.stringMatching(/unreachable/) });
    caddy.start();
    const back = await until('served after Caddy started again', async () => {
      const r = await httpRequest(httpPort, 'one.gh.test').catch(() => undefined);
      return r?.status === 200 && r.body !== '' && r;
    });
    expect(json(back)).toMatchObject({ local: '10.251.0.1' });
    expect(await until('APPLIED again', async () => (await proxyById(proxies.one!)).status === 'APPLIED')).toBe(true);
  }, 60_000);

  it('renews certificates due within the window and reports uploaded ones to replace', async () => {
    const acmeBefore = (await httpsRequest(httpsPort, 'acme.gh.test')).cert;
    // every pebble certificate expires within 10 years: due
    const r = await admin(
      `mutation { renewCertificates(input: { withinDays: 3650 }) { __typename ... on RenewCertificatesPayload { renewals { domain outcome notAfterBefore notAfterAfter detail } } ${ERROR_FIELDS} } }`,
    );
    const renewals = r.data!.renewCertificates.renewals as { domain: string; outcome: string }[];
    const by = Object.fromEntries(renewals.map((x) => [x.domain, x]));
    expect(by['acme.gh.test']).toMatchObject({ outcome: 'RENEWED' });
    expect(by['up.gh.test']).toMatchObject({ outcome: 'UPLOAD_NEEDED' });
    // Caddy's internal CA rotates its own short-lived certificates: not due
    expect(by['self.gh.test']).toMatchObject({ outcome: 'OK' });
    const acmeAfter = (await httpsRequest(httpsPort, 'acme.gh.test')).cert;
    expect(acmeAfter.serialNumber).not.toBe(acmeBefore.serialNumber);
    expect((await proxyById(proxies.up!)).certificateStatus.lastError).toMatch(/upload a new one/);
    // tenants may not run it
    const denied = await ann.client(`mutation { renewCertificates { __typename ${ERROR_FIELDS} } }`);
    expect(denied.data!.renewCertificates).toMatchObject({ code: 'FORBIDDEN' });
  }, 180_000);
});
