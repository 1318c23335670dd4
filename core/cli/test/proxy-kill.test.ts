/**
 * A controller SIGKILLed in the middle of a proxy sync, with the Caddy it runs: 40 proxies are
 * served, then 20 of them are deleted and 40 more created at once and the controller is killed
 * as soon as Caddy has taken the first part of that (exact domains live in host tables, so a
 * burst reaches Caddy in a few writes). The Caddy it leaves behind holds a config that is neither
 * before nor after; the next start replaces that Caddy, and the domains its routes serve are
 * exactly the proxies in the database (none of the deleted ones, every created one), each APPLIED,
 * none left PENDING.
 */
import { CaddyAdminClient } from 'caddy-api-client';
import { caddyAvailable, freePort } from 'caddy-api-client/testing';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REQUIRE_SYSTEM, post } from '@gatehouse/server/testing';
import { killController, spawnController, type ControllerProcess } from './support/processes.js';

const available = await caddyAvailable();
const ROUTES = ['apps', 'http', 'servers', 'gatehouse', 'routes'];

describe.skipIf(!available && !REQUIRE_SYSTEM)('a controller killed during a proxy sync', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-proxy-kill-'));
  const running: ControllerProcess[] = [];
  const caddyPids: number[] = [];
  afterAll(async () => {
    for (const c of running) await killController(c);
    for (const pid of caddyPids) if (existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves Caddy with exactly the proxies of the database after a restart, none PENDING', async () => {
    const env = {
      DATABASE_URL: '',
      GATEHOUSE_PROXY: 'on',
      GATEHOUSE_PROXY_HTTP_PORT: String(await freePort()),
      GATEHOUSE_PROXY_HTTPS_PORT: String(await freePort()),
    };
    const args = ['--data-dir', join(dir, 'pglite'), '--caddy-dir', join(dir, 'caddy'), '--proxy-listen-host', '127.0.0.1'];
    const caddy = new CaddyAdminClient({ socketPath: join(dir, 'caddy', 'admin.sock') });
    // the domains Caddy serves: the host matchers of the server's routes (host tables and wildcard routes)
    const servedDomains = async () =>
      new Set(
        ((await caddy.getConfig<{ match?: { host?: string[] }[] }[] | null>(ROUTES)).value ?? []).flatMap((r) => r.match?.flatMap((m) => m.host ?? []) ?? []),
      );
    const first = await spawnController(args, env);
    running.push(first);
    let secret = '';
    for (const end = Date.now() + 30_000; !secret && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
      secret = /keep it:\s+(gh_\S+)\n/.exec(first.output())?.[1] ?? '';
    const api = async (url: string, query: string, variables?: Record<string, unknown>) => {
      const r = await post(url, secret, query, variables);
      if (r.body.errors) throw new Error(JSON.stringify(r.body.errors));
      return r.body.data;
    };
    await api(first.url, 'mutation { createIpPool(input: { name: "p", kind: PRIVATE, network: "n", cidr: "10.254.8.0/24" }) { __typename } }');
    const hostId = (await api(first.url, 'mutation { createHost(input: { name: "h", backend: LINUX }) { ... on CreateHostPayload { host { id } } } }'))
      .createHost.host.id;
    const vm = (
      await api(
        first.url,
        `mutation { createInstance(input: { hostId: "${hostId}", name: "vm", nics: [{ network: "n" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      )
    ).createInstance.instance.id;
    const create = async (url: string, n: number) =>
      (
        await api(
          url,
          `mutation($i: ID!, $d: String!) { createWebProxy(input: { instanceId: $i, domain: $d, targetPort: 80, tlsMode: NONE }) { __typename ... on CreateWebProxyPayload { webProxy { id } } } }`,
          { i: vm, d: `p${n}.kill.test` },
        )
      ).createWebProxy.webProxy.id as string;
    const proxies = async (url: string) =>
      (await api(url, '{ webProxies(first: 500) { edges { node { id domain status } } } }')).webProxies.edges.map(
        (e: { node: { id: string; status: string } }) => e.node,
      ) as {
        id: string;
        domain: string;
        status: string;
      }[];
    const firstIds: string[] = [];
    for (let n = 0; n < 40; n++) firstIds.push(await create(first.url, n));
    for (const end = Date.now() + 60_000; (await proxies(first.url)).some((p) => p.status !== 'APPLIED') && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 100));
    expect((await servedDomains()).size).toBe(40);
    const firstDomains = new Set(Array.from({ length: 40 }, (_, n) => `p${n}.kill.test`));
    const newOnes = (served: Set<string>) => [...served].filter((d) => !firstDomains.has(d)).length;
    caddyPids.push(Number(readFileSync(join(dir, 'caddy', 'caddy.pid'), 'utf8')));

    // 20 deleted and 40 created at once; killed as soon as Caddy has taken some of it
    const burst = Promise.allSettled([
      ...firstIds.slice(0, 20).map((id) => api(first.url, `mutation($id: ID!) { deleteWebProxy(input: { id: $id }) { __typename } }`, { id })),
      ...Array.from({ length: 40 }, (_, k) => create(first.url, 100 + k)),
    ]);
    for (const end = Date.now() + 30_000; Date.now() < end && newOnes(await servedDomains()) === 0;);
    await killController(first);
    running.splice(running.indexOf(first), 1);
    await burst;
    const leftover = await servedDomains();
    const second = await spawnController(args, env);
    running.push(second);
    caddyPids.push(Number(readFileSync(join(dir, 'caddy', 'caddy.pid'), 'utf8')));
    let inDb: { id: string; domain: string; status: string }[] = [];
    for (const end = Date.now() + 60_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      inDb = await proxies(second.url);
      if (inDb.every((p) => p.status === 'APPLIED')) break;
    }
    const served = await servedDomains();
    console.log(
      `[proxy-kill] killed with ${leftover.size} domains in Caddy (${newOnes(leftover)} of the 40 new, ${[...firstDomains].filter((d) => leftover.has(d)).length} of the 40 first); after the restart ${served.size} domains for ${inDb.length} proxies in the database`,
    );
    expect(inDb.every((p) => p.status === 'APPLIED')).toBe(true);
    expect([...served].sort()).toEqual(inDb.map((p) => p.domain).sort());
  }, 240_000);
});
