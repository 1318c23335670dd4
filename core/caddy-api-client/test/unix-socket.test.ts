/**
 * The client against a real Caddy 2.6 whose admin API is on a unix socket: every operation is
 * checked by what Caddy then serves to a real HTTP request on a loopback port.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CaddyAdminClient,
  CaddyApiError,
  CaddyPreconditionFailedError,
  CaddyTimeoutError,
  CaddyUnreachableError,
  isUnknownId,
  type CaddyConfig,
  type CaddyHandler,
  type CaddyRoute,
} from '../src/index.js';
import { caddyAvailable, freePort, httpGet, startCaddy, type CaddyProcess } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await caddyAvailable();

const ROUTES = ['apps', 'http', 'servers', 'web', 'routes'] as const;

function route(id: string, path: string, body: string): CaddyRoute {
  return { '@id': id, match: [{ path: [path] }], handle: [{ handler: 'static_response', body }], terminal: true };
}

function siteConfig(port: number, routes: CaddyRoute[]): CaddyConfig {
  return { apps: { http: { servers: { web: { listen: [`127.0.0.1:${port}`], automatic_https: { disable: true }, routes } } } } };
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('against a real Caddy, admin API on a unix socket', () => {
  let caddy: CaddyProcess;
  let client: CaddyAdminClient;
  let port: number;
  /** What Caddy serves at `path` on the test server (an unmatched path gets Caddy's empty 200). */
  const served = async (path: string) => (await httpGet(`http://127.0.0.1:${port}${path}`)).body;
  const routeIds = async () => (await client.getConfig<CaddyRoute[]>(ROUTES)).value.map((r) => r['@id']);

  beforeAll(async () => {
    caddy = await startCaddy({ admin: 'unix' });
    client = caddy.client;
    port = await freePort();
  });
  afterAll(async () => {
    await caddy?.stop();
  });
  beforeEach(async () => {
    await client.load(siteConfig(port, [route('r-a', '/a', 'A'), route('r-b', '/b', 'B')]));
  });

  it('load serves the new config; getConfig returns it with an ETag and the admin section kept', async () => {
    expect(await served('/a')).toBe('A');
    expect(await served('/b')).toBe('B');

    const routes = await client.getConfig<CaddyRoute[]>(ROUTES);
    expect(routes.value.map((r) => r['@id'])).toEqual(['r-a', 'r-b']);
    expect(routes.etag).toMatch(/^"\/config\/apps\/http\/servers\/web\/routes [0-9a-f]+"$/);

    const all = await client.getConfig<CaddyConfig>();
    expect(all.value.admin?.listen).toBe(caddy.admin.listen); // preserveAdmin copied it into the loaded config
    expect(all.etag).toMatch(/^"\/config\/ [0-9a-f]+"$/);
    expect((await client.getConfig(['apps', 'http', 'servers', 'web', 'routes', 1, 'handle', 0, 'body'])).value).toBe('B');
    expect((await client.getConfig('apps/http/servers/web/no_such_key')).value).toBeNull();
  });

  it('patch, put, post and delete by path change what is served', async () => {
    await client.patch([...ROUTES, 0, 'handle', 0, 'body'], 'A2');
    expect(await served('/a')).toBe('A2');

    await client.put([...ROUTES, 0], route('r-c', '/c', 'C')); // inserts at index 0
    expect(await routeIds()).toEqual(['r-c', 'r-a', 'r-b']);
    expect(await served('/c')).toBe('C');

    await client.post(ROUTES, route('r-d', '/d', 'D')); // appends
    await client.post([...ROUTES, '...'], [route('r-e', '/e', 'E'), route('r-f', '/f', 'F')]); // appends each
    expect(await routeIds()).toEqual(['r-c', 'r-a', 'r-b', 'r-d', 'r-e', 'r-f']);
    expect([await served('/d'), await served('/e'), await served('/f')]).toEqual(['D', 'E', 'F']);

    await client.delete([...ROUTES, 1]);
    expect(await routeIds()).toEqual(['r-c', 'r-b', 'r-d', 'r-e', 'r-f']);
    expect(await served('/a')).toBe('');

    await expect(client.put([...ROUTES, 0, 'handle', 0, 'body'], 'X')).rejects.toMatchObject({ caddyMessage: expect.stringContaining('key already exists') });
    await expect(client.patch([...ROUTES, 0, 'handle', 0, 'nothing'], 'X')).rejects.toMatchObject({
      caddyMessage: expect.stringContaining('key does not exist'),
    });
    expect(await served('/c')).toBe('C');
  });

  it('get, patch, put, post and delete by @id change what is served', async () => {
    const byId = await client.getById<CaddyRoute>('r-b');
    expect(byId.value.match).toEqual([{ path: ['/b'] }]);
    expect(byId.etag).toMatch(/^"\/config\/apps\/http\/servers\/web\/routes\/1 [0-9a-f]+"$/); // the expanded path
    expect((await client.getById('r-a', ['handle', 0, 'body'])).value).toBe('A');

    await client.patchById('r-a', 'handle/0/body', 'A3');
    expect(await served('/a')).toBe('A3');

    const header: CaddyHandler = { handler: 'headers', response: { set: { 'X-Gatehouse': ['yes'] } } };
    await client.putById('r-a', ['handle', 0], header);
    const response = await httpGet(`http://127.0.0.1:${port}/a`);
    expect([response.body, response.headers['x-gatehouse']]).toEqual(['A3', 'yes']);

    await client.postById('r-a', ['match', 0, 'path'], '/a-too');
    expect(await served('/a-too')).toBe('A3');

    await client.patchById('r-b', [], route('r-b', '/b', 'B2'));
    expect(await served('/b')).toBe('B2');

    await client.deleteById('r-a');
    expect(await served('/a')).toBe('');
    const unknown = await client.getById('r-a').catch((error: unknown) => error);
    expect(isUnknownId(unknown)).toBe(true);
    expect(unknown).toMatchObject({ status: 404, method: 'GET', path: '/id/r-a', caddyMessage: "unknown object ID 'r-a'" });
    await expect(client.patchById('r-a', [], route('r-a', '/a', 'A'))).rejects.toMatchObject({ status: 404 });
  });

  it('upsertById appends once, then replaces: two upserts leave one route', async () => {
    expect(await client.upsertById(ROUTES, 'r-new', route('ignored', '/n', 'N1'))).toEqual({ action: 'appended', attempts: 1 });
    expect(await served('/n')).toBe('N1');
    expect(await client.upsertById(ROUTES, 'r-new', route('ignored', '/n', 'N2'))).toEqual({ action: 'replaced', attempts: 1 });
    expect(await served('/n')).toBe('N2');
    expect(await routeIds()).toEqual(['r-a', 'r-b', 'r-new']);
  });

  it('upsertById inserts before the first element when asked, and still replaces in place', async () => {
    const before = await routeIds();
    expect(await client.upsertById(ROUTES, 'r-front', route('ignored', '/f', 'F1'), { position: 'start' })).toEqual({ action: 'appended', attempts: 1 });
    expect(await routeIds()).toEqual(['r-front', ...before]);
    expect(await served('/f')).toBe('F1');
    expect(await client.upsertById(ROUTES, 'r-front', route('ignored', '/f', 'F2'), { position: 'start' })).toEqual({ action: 'replaced', attempts: 1 });
    expect(await routeIds()).toEqual(['r-front', ...before]);
    expect(await served('/f')).toBe('F2');
    await client.deleteById('r-front');
  });

  it('upsertById creates the parent array when it is absent', async () => {
    await client.delete(ROUTES);
    expect((await client.getConfig(ROUTES)).value).toBeNull();
    expect((await client.upsertById(ROUTES, 'r-x', route('r-x', '/x', 'X'))).action).toBe('appended');
    expect(await routeIds()).toEqual(['r-x']);
    expect(await served('/x')).toBe('X');
  });

  it('concurrent upserts of one new @id leave exactly one route (If-Match on the parent, retry on 412)', async () => {
    const bodies = ['P0', 'P1', 'P2', 'P3'];
    const results = await Promise.all(bodies.map((body) => client.upsertById(ROUTES, 'r-race', route('r-race', '/race', body))));
    expect(results.filter((r) => r.action === 'appended')).toHaveLength(1);
    expect((await routeIds()).filter((id) => id === 'r-race')).toHaveLength(1);
    const body = (await client.getById<string>('r-race', 'handle/0/body')).value;
    expect(bodies).toContain(body);
    expect(await served('/race')).toBe(body);
  });

  it('@ids and keys are percent-encoded: an @id with spaces, unicode, ? # and % works', async () => {
    const id = 'route ü?#%20';
    await client.upsertById(ROUTES, id, route(id, '/odd', 'odd'));
    expect((await client.getConfig([...ROUTES, 2, '@id'])).value).toBe(id);
    await client.patchById(id, 'handle/0/body', 'still odd');
    expect(await served('/odd')).toBe('still odd');
  });

  it('a stale ETag gives CaddyPreconditionFailedError and changes nothing', async () => {
    const { etag } = await client.getConfig(ROUTES);
    await client.patch([...ROUTES, 0, 'handle', 0, 'body'], 'A4', { ifMatch: etag }); // still current: applied
    expect(await served('/a')).toBe('A4');

    const stale = await client.patch([...ROUTES, 0, 'handle', 0, 'body'], 'A5', { ifMatch: etag }).catch((error: unknown) => error);
    expect(stale).toBeInstanceOf(CaddyPreconditionFailedError);
    expect(stale).toBeInstanceOf(CaddyApiError);
    expect(stale).toMatchObject({ status: 412, code: 'CADDY_PRECONDITION_FAILED', retryable: true, ifMatch: etag });
    expect((stale as Error).message).toContain('If-Match header did not match current config hash');
    expect(await served('/a')).toBe('A4');
    expect((await client.getConfig([...ROUTES, 0, 'handle', 0, 'body'])).value).toBe('A4');

    // an ETag read through /id guards writes through /id, and through /config
    const b = await client.getById('r-b');
    await client.patchById('r-b', 'handle/0/body', 'B3');
    await expect(client.deleteById('r-b', [], { ifMatch: b.etag })).rejects.toBeInstanceOf(CaddyPreconditionFailedError);
    await expect(client.post(ROUTES, route('r-z', '/z', 'Z'), { ifMatch: b.etag })).rejects.toBeInstanceOf(CaddyPreconditionFailedError);
    expect(await routeIds()).toEqual(['r-a', 'r-b']);
    expect(await served('/b')).toBe('B3');

    // load with ifMatch goes through POST /config/, which checks it (POST /load would not)
    const root = await client.getConfig();
    await client.patch([...ROUTES, 1, 'handle', 0, 'body'], 'B4');
    await expect(client.load(siteConfig(port, [route('r-q', '/q', 'Q')]), { ifMatch: root.etag })).rejects.toBeInstanceOf(CaddyPreconditionFailedError);
    expect(await routeIds()).toEqual(['r-a', 'r-b']);
    const fresh = await client.getConfig();
    await client.load(siteConfig(port, [route('r-q', '/q', 'Q')]), { ifMatch: fresh.etag });
    expect(await served('/q')).toBe('Q');
    expect((await client.getConfig<CaddyConfig>()).value.admin?.listen).toBe(caddy.admin.listen);
  });

  it("an invalid config gives CaddyApiError with Caddy's message, and the previous config keeps serving", async () => {
    const bad = siteConfig(port, [{ handle: [{ handler: 'no_such_handler' }] }]);
    const error = await client.load(bad).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CaddyApiError);
    expect(error).toMatchObject({ status: 400, method: 'POST', path: '/load', code: 'CADDY_API_ERROR' });
    expect((error as CaddyApiError).caddyMessage).toContain('unknown module: http.handlers.no_such_handler');
    expect((error as CaddyApiError).message).toContain(caddy.admin.listen!);
    expect(await served('/a')).toBe('A');
    expect((await client.getConfig<CaddyConfig>('admin')).value).toEqual(caddy.admin); // the admin API stayed where it was

    // a path write whose result does not provision is refused too (Caddy 2.6.2 answers 500 here)
    const patchError = await client.patch([...ROUTES, 0, 'handle', 0], { handler: 'no_such_handler' }).catch((e: unknown) => e);
    expect(patchError).toBeInstanceOf(CaddyApiError);
    expect((patchError as CaddyApiError).caddyMessage).toContain('unknown module: http.handlers.no_such_handler');
    expect(await served('/a')).toBe('A');

    await expect(client.getConfig(['apps', 'no_such_app', 'x'])).rejects.toMatchObject({
      status: 400,
      caddyMessage: expect.stringContaining('invalid traversal path'),
    });
  });
});

describe.skipIf(!available && !REQUIRE_SYSTEM)('a Caddy that has stopped', () => {
  let caddy: CaddyProcess | undefined;
  afterAll(async () => {
    await caddy?.stop();
  });

  it('stop() ends Caddy, and the next call gives CaddyUnreachableError naming the socket', async () => {
    caddy = await startCaddy({ admin: 'unix' });
    await caddy.client.stop();
    for (let i = 0; i < 100 && !caddy.exited(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(caddy.exited()).toBe(true);

    const error = await caddy.client.getConfig().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CaddyUnreachableError);
    expect(error).toMatchObject({ code: 'CADDY_UNREACHABLE', retryable: true, method: 'GET', path: '/config/' });
    expect((error as Error).message).toContain(join(caddy.dir, 'admin.sock'));
  });
});

describe('an admin socket that accepts but never answers', () => {
  const sockets: Socket[] = [];
  let dir: string;
  let server: Server;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'caddy-api-client-hang-'));
    server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(join(dir, 'admin.sock'), resolve));
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('gives CaddyTimeoutError (a CaddyUnreachableError) after timeoutMs', async () => {
    const client = new CaddyAdminClient({ socketPath: join(dir, 'admin.sock'), timeoutMs: 5000 });
    const started = Date.now();
    const error = await client.patch('apps', {}, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(error).toBeInstanceOf(CaddyTimeoutError);
    expect(error).toBeInstanceOf(CaddyUnreachableError);
    expect(error).toMatchObject({ code: 'CADDY_TIMEOUT', timeoutMs: 200, method: 'PATCH', path: '/config/apps' });
    expect(sockets.length).toBeGreaterThan(0); // it did connect: the timeout covers a silent server, not only a dead one
  });

  it('gives up when the caller aborts', async () => {
    const client = new CaddyAdminClient({ socketPath: join(dir, 'admin.sock') });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('caller gave up')), 100);
    await expect(client.getConfig([], { signal: controller.signal })).rejects.toThrow('caller gave up');
  });
});
