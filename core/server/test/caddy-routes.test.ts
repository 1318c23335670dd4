/**
 * Proxy routes against a real Caddy (Debian's 2.6.2), written as the config sync writes them
 * (sites → host tables or the host directory, and wildcard routes → CaddyWriter's patches and
 * files), in both layouts: requests by Host reach the right backend with X-Forwarded headers, an
 * exact domain beats a wildcard added before it, WebSocket upgrades pass through (or are
 * stripped), a change to one domain is one request with host tables and none with the host
 * directory, and 600 domains each reach their own target. Backends and Caddy on loopback.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
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

describe.skipIf(!available && !REQUIRE_SYSTEM).each([{ layout: 'host tables' }, { layout: 'host directory' }])(
  'proxy routes on a real Caddy, $layout',
  ({ layout }) => {
    const directory = layout === 'host directory';
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
      await writer.write(siteObjects([...sites.values()], settings));
    };
    const remove = async (id: string) => {
      sites.delete(id);
      await writer.write(siteObjects([...sites.values()], settings));
    };
    /** Admin requests a change to one domain costs: its host table's route, or nothing (a file). */
    const perChange = directory ? 0 : 1;
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
      settings = {
        listenHost: '127.0.0.1',
        httpPort: port,
        httpsPort: await freePort(),
        acme: { directoryUrl: 'https://127.0.0.1:1/dir' },
        ...(directory ? { hostsDir: join(caddy.dir, 'hosts'), askPort: await freePort() } : {}),
      };
      writer = new CaddyWriter(caddy.client, settings.hostsDir);
      await writer.prepareLoad(siteObjects([], settings));
      await caddy.client.load(proxyConfig({ admin: caddy.admin, settings }));
      writer.loaded(siteObjects([], settings));
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

    it('changes a proxy in place with one request (its host table) or none (its file), twice is none, delete removes it', async () => {
      const p = spec('00000000-0000-4000-8000-0000000000a1', 'app.example.test', 'b');
      const before = writer.requests;
      await upsert(p);
      expect(writer.requests - before).toBe(perChange);
      await upsert(p);
      expect(writer.requests - before).toBe(perChange);
      // both exact domains share one host table (same mode) or the directory's route; the wildcard has its own route
      expect((await routes()).map((r) => r['@id'])).toEqual([directory ? 'gh-hosts' : 'gh-hosts-http-0', 'gh-proxy-00000000-0000-4000-8000-0000000000b1']);
      expect(await get('app.example.test')).toMatchObject({ name: 'b' });
      await remove(p.id);
      expect((await httpGet(`http://127.0.0.1:${port}/`, 'app.example.test')).body).toBe('');
      expect(await get('special.user1.example.test')).toMatchObject({ name: 'a' });
      // the exact domains' route(s) ahead of the one wildcard, which is last
      const hosts = (await routes()).map((r) => r.match[0].host?.at(-1) ?? '');
      expect(hosts.at(-1)).toBe('*.user1.example.test');
      expect(hosts.filter((h) => h.startsWith('*.'))).toHaveLength(1);
    });

    it('serves 600 domains from several host tables, each to its own target, and adds one more with one request', async () => {
      const targets = ['a', 'b'];
      const many = Array.from({ length: 600 }, (_, i) =>
        spec(`00000000-0000-4000-9000-${String(i).padStart(12, '0')}`, `d${i}.many.example.test`, targets[i % 2]!),
      );
      for (const p of many) sites.set(p.id, proxySite({ ...p, tlsMode: 'none' }, settings));
      await writer.write(siteObjects([...sites.values()], settings));
      const tables = (await routes()).filter((r) => r['@id'].startsWith('gh-hosts-'));
      if (directory) expect(readdirSync(settings.hostsDir!)).toHaveLength(sites.size - 1);
      else {
        expect(tables).toHaveLength(tableCount(many.length + 1));
        expect(tables.length).toBeGreaterThan(1);
      }
      for (const i of [0, 1, 299, 598, 599])
        expect(await get(`d${i}.many.example.test`)).toMatchObject({ name: targets[i % 2], xhost: `d${i}.many.example.test` });
      const before = writer.requests;
      await upsert(spec('00000000-0000-4000-9000-100000000000', 'one-more.many.example.test', 'b'));
      expect(writer.requests - before).toBe(perChange);
      expect(await get('one-more.many.example.test')).toMatchObject({ name: 'b' });
      // a name in no table is matched by no route: Caddy's empty 200
      expect((await httpGet(`http://127.0.0.1:${port}/`, 'other.many.example.test')).body).toBe('');
      for (const p of many) sites.delete(p.id);
      await writer.write(siteObjects([...sites.values()], settings));
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
    // (the host directory's own behaviour: only its layout has it)
    if (directory)
      it('host directory: a target or mode edited in place, hostile hosts match nothing, a full load reads back what is there', async () => {
        const dir = settings.hostsDir!;
        const p = spec('00000000-0000-4000-8000-0000000000d1', 'edit.example.test', 'a');
        await upsert(p);
        expect(await get('edit.example.test')).toMatchObject({ name: 'a' });
        await upsert({ ...p, targetPort: ports.b! });
        expect(await get('edit.example.test')).toMatchObject({ name: 'b' });
        expect(readdirSync(join(dir, 'edit.example.test.host'))).toEqual([`http@127.0.0.1:${ports.b}`]);
        // a TLS site's mode: plain HTTP is redirected to the HTTPS port
        sites.set(p.id, proxySite({ ...p, targetPort: ports.b!, tlsMode: 'self_signed' }, settings));
        await writer.write(siteObjects([...sites.values()], settings));
        const redirect = await httpGet(`http://127.0.0.1:${port}/x?y=1`, 'edit.example.test');
        expect(redirect.status).toBe(308);
        expect(redirect.headers.location).toBe(`https://edit.example.test:${settings.httpsPort}/x?y=1`);
        // hosts that are no domain's directory, or would name the directory itself, match nothing
        for (const host of ['..', '.', '*', 'edit.example.test.host', 'EDIT.EXAMPLE.TEST.x'])
          expect((await httpGet(`http://127.0.0.1:${port}/`, host)).body, host).toBe('');
        // what a full load finds: a stale domain, a leftover staging directory, a wrong file, a missing domain
        mkdirSync(join(dir, 'stale.example.test.host'));
        writeFileSync(join(dir, 'stale.example.test.host', `http@127.0.0.1:${ports.a}`), '');
        mkdirSync(join(dir, '.new-leftover'));
        writeFileSync(join(dir, 'app2.example.test.host'), 'not a directory');
        await upsert(spec('00000000-0000-4000-8000-0000000000d2', 'app2.example.test', 'a'));
        await writer.prepareLoad(siteObjects([...sites.values()], settings));
        expect(await get('app2.example.test')).toMatchObject({ name: 'a' });
        expect((await httpGet(`http://127.0.0.1:${port}/`, 'stale.example.test')).body).toBe('');
        expect(readdirSync(dir).filter((e) => e.startsWith('.') || e.startsWith('stale'))).toEqual([]);
        await remove(p.id);
        await remove('00000000-0000-4000-8000-0000000000d2');
        expect(readdirSync(dir).filter((e) => e.startsWith('edit') || e.startsWith('app2'))).toEqual([]);
      });

    /** An HTTPS GET with `host` as SNI and Host: the reply and the issuer of the certificate served, or the handshake's error. */
    const httpsGet = (host: string) =>
      new Promise<{ status: number; body: string; issuer: string } | { error: string }>((resolve) => {
        const req = httpsRequest(
          { host: '127.0.0.1', port: settings.httpsPort, servername: host, headers: { host }, rejectUnauthorized: false, agent: false, timeout: 10_000 },
          (res) => {
            const issuer = String((res.socket as TLSSocket).getPeerCertificate().issuer?.CN ?? '');
            let body = '';
            res.on('data', (d: Buffer) => (body += String(d)));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body, issuer }));
          },
        );
        req.on('error', (error) => resolve({ error: error.message }));
        req.end();
      });

    if (directory)
      it('host directory: a self-signed domain gets its certificate on demand, with no admin request; names without a TLS mode get none', async () => {
        const before = writer.requests;
        const p = spec('00000000-0000-4000-8000-0000000000e1', 'tls.example.test', 'a');
        await upsert(spec('00000000-0000-4000-8000-0000000000e2', 'plain.example.test', 'b'));
        sites.set(p.id, proxySite({ ...p, tlsMode: 'self_signed' }, settings));
        await writer.write(siteObjects([...sites.values()], settings));
        expect(writer.requests - before).toBe(0);
        const served = await httpsGet('tls.example.test');
        expect(served).toMatchObject({ status: 200, issuer: expect.stringMatching(/Caddy Local Authority/) });
        expect(JSON.parse((served as { body: string }).body)).toMatchObject({ name: 'a', proto: 'https' });
        // Caddy's ask endpoint refuses a domain without a TLS mode and one it does not know: no certificate, the handshake fails
        expect(await httpsGet('plain.example.test')).toHaveProperty('error');
        expect(await httpsGet('unknown.example.test')).toHaveProperty('error');
        await remove(p.id);
        await remove('00000000-0000-4000-8000-0000000000e2');
        expect(writer.requests - before).toBe(0);
      });
  },
);
