/**
 * The TCP transport against a real Caddy whose admin API listens on a loopback port with
 * `enforce_origin`: the client's Host/Origin pass, a foreign Origin is refused and writes nothing,
 * and a port where nothing listens is reported as unreachable with its address.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaddyAdminClient, CaddyApiError, CaddyUnreachableError, type CaddyAdminConfig, type CaddyRoute } from '../src/index.js';
import { caddyAvailable, freePort, httpGet, startCaddy, type CaddyProcess } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await caddyAvailable();

const ROUTES = ['apps', 'http', 'servers', 'web', 'routes'];

describe.skipIf(!available && !REQUIRE_SYSTEM)('against a real Caddy, admin API on loopback TCP with enforce_origin', () => {
  let caddy: CaddyProcess;
  let port: number;
  let adminUrl: string;

  beforeAll(async () => {
    caddy = await startCaddy({ admin: 'tcp', enforceOrigin: true });
    adminUrl = `http://${caddy.admin.listen}`;
    port = await freePort();
  });
  afterAll(async () => {
    await caddy?.stop();
  });

  it('accepts the Host and Origin the client sends: load, upsert and serve', async () => {
    const admin = (await caddy.client.getConfig<CaddyAdminConfig>('admin')).value;
    expect(admin).toMatchObject({ enforce_origin: true, origins: [caddy.admin.listen] });

    const hello: CaddyRoute = { match: [{ host: ['app.test'] }], handle: [{ handler: 'static_response', body: 'hello over tcp' }], terminal: true };
    await caddy.client.load({ apps: { http: { servers: { web: { listen: [`127.0.0.1:${port}`], automatic_https: { disable: true }, routes: [] } } } } });
    await caddy.client.upsertById(ROUTES, 'r-hello', hello);
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'app.test')).body).toBe('hello over tcp');
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'other.test')).body).toBe('');
    expect((await caddy.client.getConfig<CaddyAdminConfig>('admin')).value).toEqual(caddy.admin); // load kept the admin section
  });

  it('refuses a client with a foreign Origin, with Caddy’s message, and applies nothing', async () => {
    const before = await caddy.client.getConfig();
    const intruder = new CaddyAdminClient({ url: adminUrl, origin: 'http://evil.example' });

    const read = await intruder.getConfig().catch((e: unknown) => e);
    expect(read).toBeInstanceOf(CaddyApiError);
    expect(read).toMatchObject({ status: 403, caddyMessage: "client is not allowed to access from origin 'http://evil.example'" });

    await expect(intruder.delete(ROUTES)).rejects.toMatchObject({ status: 403 });
    await expect(intruder.load({})).rejects.toMatchObject({ status: 403 });
    expect((await caddy.client.getConfig()).etag).toBe(before.etag);
    expect((await httpGet(`http://127.0.0.1:${port}/`, 'app.test')).body).toBe('hello over tcp');
  });

  it('gives CaddyUnreachableError naming the address when nothing listens on the port', async () => {
    const deadPort = await freePort();
    const client = new CaddyAdminClient({ url: `http://127.0.0.1:${deadPort}`, timeoutMs: 2000 });
    const error = await client.getConfig().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CaddyUnreachableError);
    expect(error).toMatchObject({ code: 'CADDY_UNREACHABLE', address: `http://127.0.0.1:${deadPort}` });
    expect((error as Error).message).toContain(`127.0.0.1:${deadPort}`);
    expect((error as Error).message).toContain('ECONNREFUSED');
  });
});
