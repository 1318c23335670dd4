/**
 * Proxy routes against a real Caddy (Debian's 2.6.2), written as the config sync writes them
 * (sites → host tables and wildcard routes → CaddyWriter's patches): requests by Host reach the
 * right backend with X-Forwarded headers, an exact domain beats a wildcard added before it,
 * WebSocket upgrades pass through (or are stripped), a change to one domain is one request, and
 * 600 domains over several host tables each reach their own target. Backends and Caddy on loopback.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { caddyAvailable, freePort, httpGet, startCaddy, type CaddyProcess } from 'caddy-api-client/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import {
  ROUTES_PATH,
  proxyConfig,
  proxySite,
  siteObjects,
  tableCount,
  type ProxyRouteSpec,
  type ProxySettings,
  type ProxySite,
} from '../src/proxy/caddy-routes.js';
import { CaddyWriter } from '../src/proxy/caddy-writer.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await caddyAvailable();

describe.skipIf(!available && !REQUIRE_SYSTEM)('proxy routes on a real Caddy', () => {
  let caddy: CaddyProcess;
  let port: number;
  const backends: Server[] = [];
  let wss: WebSocketServer;
  const ports: Record<string, number> = {};

  /** A backend that answers with its name and the forwarding headers it saw. */
  const backend = (name: string) =>
    new Promise<number>((resolve) => {
      const server = createServer((req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            name,
            host: req.headers.host,
            xff: req.headers['x-forwarded-for'],
            proto: req.headers['x-forwarded-proto'],
            xhost: req.headers['x-forwarded-host'],
          }),
        );
      });
      backends.push(server);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
    });
  const spec = (id: string, domain: string, target: string, extra: Partial<ProxyRouteSpec> = {}): ProxyRouteSpec => ({
    id,
    domain,
    targetAddress: '127.0.0.1',
    targetPort: ports[target]!,
    targetProtocol: 'http',
    websocket: true,
    ...extra,
  });
  const get = async (host: string) => {
    const r = await httpGet(`http://127.0.0.1:${port}/`, host);
    return r.status === 200 ? (JSON.parse(r.body) as Record<string, string>) : { status: String(r.status) };
  };
  let settings: ProxySettings;
  let writer: CaddyWriter;
  /** The sites Caddy should hold, in creation order (as the database orders them by id). */
  const sites = new Map<string, ProxySite>();
  const upsert = async (p: ProxyRouteSpec) => {
    sites.set(p.id, proxySite({ ...p, tlsMode: 'none' }, settings));
    await writer.write(siteObjects([...sites.values()]));
  };
  const remove = async (id: string) => {
    sites.delete(id);
    await writer.write(siteObjects([...sites.values()]));
  };
  const routes = async () => (await caddy.client.getConfig<{ '@id': string; match: [{ host: string[] }] }[]>(ROUTES_PATH)).value;

  beforeAll(async () => {
    ports.a = await backend('a');
    ports.b = await backend('b');
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`echo:${String(data)}`)));
    await new Promise((r) => wss.once('listening', r));
    ports.ws = (wss.address() as AddressInfo).port;
    port = await freePort();
    caddy = await startCaddy();
    settings = { listenHost: '127.0.0.1', httpPort: port, httpsPort: await freePort(), acme: { directoryUrl: 'https://127.0.0.1:1/dir' } };
    await caddy.client.load(proxyConfig({ admin: caddy.admin, settings }));
    writer = new CaddyWriter(caddy.client);
    writer.loaded(siteObjects([]));
  }, 60_000);

  afterAll(async () => {
    await caddy?.stop();
    for (const s of backends) s.close();
    wss?.close();
  });

  it('sends each domain to its target with X-Forwarded headers, exact domains before wildcards', async () => {
    await upsert(spec('00000000-0000-4000-8000-0000000000a1', 'app.example.test', 'a'));
    await upsert(spec('00000000-0000-4000-8000-0000000000b1', '*.user1.example.test', 'b'));
    // added after the wildcard, yet it wins for its own name
    await upsert(spec('00000000-0000-4000-8000-0000000000a2', 'special.user1.example.test', 'a'));
    expect(await get('app.example.test')).toMatchObject({ name: 'a', host: 'app.example.test', xff: '127.0.0.1', proto: 'http', xhost: 'app.example.test' });
    expect(await get('vm7.user1.example.test')).toMatchObject({ name: 'b', xhost: 'vm7.user1.example.test' });
    expect(await get('special.user1.example.test')).toMatchObject({ name: 'a' });
    // a wildcard label is one label: deeper names and other domains match nothing
    // (Caddy answers an unmatched request with an empty 200)
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'a.b.user1.example.test')).body).toBe('');
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'other.example.test')).body).toBe('');
  });

  it('changes a proxy in place with one request (its host table), twice is none, delete removes it', async () => {
    const p = spec('00000000-0000-4000-8000-0000000000a1', 'app.example.test', 'b');
    const before = writer.requests;
    await upsert(p);
    expect(writer.requests - before).toBe(1);
    await upsert(p);
    expect(writer.requests - before).toBe(1);
    // both exact domains share one host table (same mode); the wildcard has its own route
    expect((await routes()).map((r) => r['@id'])).toEqual(['gh-hosts-http-0', 'gh-proxy-00000000-0000-4000-8000-0000000000b1']);
    expect(await get('app.example.test')).toMatchObject({ name: 'b' });
    await remove(p.id);
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'app.example.test')).body).toBe('');
    expect(await get('special.user1.example.test')).toMatchObject({ name: 'a' });
    // host tables ahead of the one wildcard, which is last
    const hosts = (await routes()).map((r) => r.match[0].host.at(-1) ?? '');
    expect(hosts.at(-1)).toBe('*.user1.example.test');
    expect(hosts.filter((h) => h.startsWith('*.'))).toHaveLength(1);
  });

  it('serves 600 domains from several host tables, each to its own target, and adds one more with one request', async () => {
    const targets = ['a', 'b'];
    const many = Array.from({ length: 600 }, (_, i) =>
      spec(`00000000-0000-4000-9000-${String(i).padStart(12, '0')}`, `d${i}.many.example.test`, targets[i % 2]!),
    );
    for (const p of many) sites.set(p.id, proxySite({ ...p, tlsMode: 'none' }, settings));
    await writer.write(siteObjects([...sites.values()]));
    const tables = (await routes()).filter((r) => r['@id'].startsWith('gh-hosts-'));
    expect(tables).toHaveLength(tableCount(many.length + 1));
    expect(tables.length).toBeGreaterThan(1);
    for (const i of [0, 1, 299, 598, 599])
      expect(await get(`d${i}.many.example.test`)).toMatchObject({ name: targets[i % 2], xhost: `d${i}.many.example.test` });
    const before = writer.requests;
    await upsert(spec('00000000-0000-4000-9000-100000000000', 'one-more.many.example.test', 'b'));
    expect(writer.requests - before).toBe(1);
    expect(await get('one-more.many.example.test')).toMatchObject({ name: 'b' });
    // a name in no table is matched by no route: Caddy's empty 200
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'other.many.example.test')).body).toBe('');
    for (const p of many) sites.delete(p.id);
    await writer.write(siteObjects([...sites.values()]));
  });

  it('passes WebSocket upgrades through to the target, and strips them when the proxy says no', async () => {
    await upsert(spec('00000000-0000-4000-8000-0000000000c1', 'ws.example.test', 'ws'));
    const socket = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { host: 'ws.example.test' } });
    const reply = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    socket.close();
    expect(reply).toBe('echo:ping');

    // websocket: false — the upgrade is stripped, so the handshake fails
    await upsert(spec('00000000-0000-4000-8000-0000000000c2', 'nows.example.test', 'ws', { websocket: false }));
    const refused = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { host: 'nows.example.test' } });
    const outcome = await new Promise<string>((resolve) => {
      refused.once('open', () => resolve('open'));
      refused.once('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`));
      refused.once('error', (err) => resolve(`error ${err.message}`));
    });
    refused.terminate();
    expect(outcome).not.toBe('open');
  });
});
