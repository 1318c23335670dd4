/**
 * Caddy cannot run the proxy server because its HTTP port is taken by another program: every web
 * proxy is FAILED with Caddy's reason (said once in the log, not at every retry), and once the port
 * is free the next check loads everything and the proxies are APPLIED, served by a restarted Caddy
 * (Caddy 2.6.2 keeps the listeners of a refused start). Real Caddy, PGlite.
 */
import { caddyAvailable, freePort, httpGet } from 'caddy-api-client/testing';
import { run } from '@gatehouse/sdk';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/db/database.js';
import { CaddySupervisor } from '../src/proxy/caddy-process.js';
import { ProxyManager } from '../src/proxy/proxy-manager.js';
import { createContainer } from '../src/server.js';
import { EventBusToken } from '../src/di/tokens.js';
import { createTestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { REQUIRE_SYSTEM } from '../src/testing/stores.js';

const available = (await caddyAvailable()) && process.getuid?.() === 0;

async function until<T>(probe: () => Promise<T | false | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('Caddy cannot bind the proxy port', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-proxy-port-'));
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('fails every proxy with Caddy’s reason, logs it once, and applies them when the port is free', async () => {
    // the proxy's target network is a blackhole here: requests to it fail at once (502), never leave the machine
    await run('ip', ['route', 'add', 'blackhole', '10.250.9.0/24']);
    cleanups.push(() => run('ip', ['route', 'del', 'blackhole', '10.250.9.0/24']));
    const httpPort = await freePort();
    const squatter: Server = createServer();
    await new Promise<void>((resolve) => squatter.listen(httpPort, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((r) => squatter.close(r)));

    const store = await openStore({ kind: 'pglite' });
    cleanups.push(() => store.close());
    const container = createContainer(store);
    const api = await createTestApi(store, container);
    const logged: string[] = [];
    const logger = { info: (m: string) => logged.push(m), warn: (m: string) => logged.push(m), error: (m: string) => logged.push(m) };
    const caddy = new CaddySupervisor(join(dir, 'caddy'), logger);
    caddy.start();
    cleanups.push(() => caddy.stop());
    const manager = new ProxyManager(store.db, container.resolve(EventBusToken), logger, {
      admin: { socketPath: caddy.socketPath },
      adminConfig: caddy.adminConfig,
      settings: { listenHost: '127.0.0.1', httpPort, httpsPort: await freePort(), acme: { directoryUrl: 'https://127.0.0.1:1/dir' } },
      checkIntervalMs: 200,
      refusedRetryMs: 500,
      restartCaddy: () => caddy.restart(),
    });
    cleanups.unshift(() => manager.stop());
    await until(
      async () =>
        (await manager.client
          .getConfig([])
          .then(() => true)
          .catch(() => false)) && true,
    );
    await manager.start();

    const hostId = await createHost(api.admin, 'h');
    await createPool(api.admin, { name: 'p', kind: 'PRIVATE', network: 'n', cidr: '10.250.9.0/24' });
    const vm = await api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm", nics: [{ network: "n" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      {
        h: hostId,
      },
    );
    const created = await api.admin(
      `mutation($i: ID!) { createWebProxy(input: { instanceId: $i, domain: "busy.gh.test", targetPort: 80, tlsMode: NONE }) { ... on CreateWebProxyPayload { webProxy { id } } } }`,
      { i: vm.data!.createInstance.instance.id },
    );
    const id = created.data!.createWebProxy.webProxy.id as string;
    const proxy = async () => (await api.admin(`query($id: ID!) { webProxy(id: $id) { status statusError } }`, { id })).data!.webProxy;

    const failed = await until(async () => {
      await manager.sync();
      const p = await proxy();
      return p.status === 'FAILED' && p;
    });
    expect(failed.statusError).toMatch(/address already in use/);
    // a second of checks every 200 ms: the reason is logged once
    await new Promise((r) => setTimeout(r, 1000));
    expect(logged.filter((l) => /cannot run the proxy server/.test(l))).toHaveLength(1);
    expect(logged.filter((l) => /lost its config/.test(l))).toHaveLength(0);

    await new Promise((r) => squatter.close(r));
    expect(await until(async () => (await proxy()).status === 'APPLIED')).toBe(true);
    expect((await proxy()).statusError).toBeNull();
    expect(logged).toContain('proxy manager: Caddy runs the proxy server now');
    // every request reaches the proxy's route (its target does not answer: 502), none a listener
    // left over from a refused start (those answer an empty 200)
    const statuses = new Set<number>();
    for (let i = 0; i < 20; i++) statuses.add((await httpGet(`http://127.0.0.1:${httpPort}/`, 'busy.gh.test')).status);
    expect([...statuses]).toEqual([502]);
  }, 60_000);
});
