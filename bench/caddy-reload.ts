/**
 * Where Caddy 2.6's time goes when one domain is added at N domains: a bare Caddy (no controller)
 * loaded with the config Gatehouse builds for N proxies (caddy-routes.ts), then the one admin
 * request that adds a domain, timed; in variants of what the config holds per domain.
 *
 *   npx tsx bench/caddy-reload.ts [N=10000] [REPS=9] [variants, comma-separated]
 */
import { performance } from 'node:perf_hooks';
import { Agent, createServer, request } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostDirectory } from '../core/server/src/proxy/host-directory.js';
import { hostEntries } from '../core/server/src/proxy/caddy-routes.js';
import { loadavg } from 'node:os';
import { startCaddy, freePort } from 'caddy-api-client/testing';
import type { CaddyConfig } from 'caddy-api-client';
import { proxyConfig, proxySite, siteObjects, ROUTES_PATH, POLICIES_PATH, type ProxySettings, type ProxySite } from '../core/server/src/proxy/caddy-routes.js';

const N = Number(process.argv[2] ?? 10_000);
const REPS = Number(process.argv[3] ?? 9);
const ONLY = process.argv[4]?.split(',');
const N_TLS = Number(process.env.N_TLS ?? 2000);
/** How long to let Caddy issue the self-signed certificates before timing changes. */
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 30_000);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function caddyTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .slice(readFileSync(`/proc/${pid}/stat`, 'utf8').lastIndexOf(')') + 2)
    .split(' ');
  return Number(f[11]) + Number(f[12]);
}

function get(port: number, host: string, agent: Agent | false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Caddy CPU µs per request over `ms` of 16 keep-alive connections to `host`. */
async function cpuPerRequest(pid: number, port: number, host: string, ms: number): Promise<{ us: number; rps: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  let n = 0;
  let stop = false;
  const t0 = caddyTicks(pid);
  const start = performance.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (!stop) {
        const r = await get(port, host, agent);
        if (r.status !== 200 || !r.body) throw new Error(`${host}: ${r.status} ${r.body}`);
        n++;
        if (performance.now() - start > ms) stop = true;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  agent.destroy();
  return { us: ((caddyTicks(pid) - t0) / 100 / n) * 1e6, rps: n / seconds };
}

async function main(): Promise<void> {
  const backend = createServer((req, res) => res.end(JSON.stringify({ host: req.headers.host })));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
  const backendPort = (backend.address() as { port: number }).port;
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const settings: ProxySettings = { listenHost: '127.0.0.1', httpPort, httpsPort, acme: { directoryUrl: 'https://127.0.0.1:9/directory' } };
  const sites = (n: number, tlsMode: 'none' | 'self_signed', prefix = 'd'): ProxySite[] =>
    Array.from({ length: n }, (_, i) =>
      proxySite(
        {
          id: `${prefix}${i}`,
          domain: `${prefix}${i}.bench.gh.test`,
          targetAddress: '127.0.0.1',
          targetPort: backendPort,
          targetProtocol: 'http',
          websocket: true,
          tlsMode,
        },
        settings,
      ),
    );

  type Variant = {
    name: string;
    config: (admin: CaddyConfig['admin']) => CaddyConfig;
    change: (client: Awaited<ReturnType<typeof startCaddy>>['client'], rep: number) => Promise<void>;
  };
  /** Adds domain `x<rep>` to the first host table (what the writer sends for a new exact domain). */
  const tableChange = (n: number, tls: 'none' | 'self_signed') => async (client: Awaited<ReturnType<typeof startCaddy>>['client'], rep: number) => {
    const all = [...sites(n, tls), ...sites(rep + 1, tls, 'x')];
    const routes = siteObjects(all).routes;
    const id = routes[0]!['@id'] as string;
    await client.patchById(id, [], routes[0]);
  };
  const variants: Variant[] = [
    {
      name: 'empty-server',
      config: (admin) => proxyConfig({ admin, settings, sites: [] }),
      change: async (c, rep) =>
        void (await c.post(ROUTES_PATH, { '@id': `r${rep}`, match: [{ host: [`x${rep}.t`] }], handle: [{ handler: 'static_response', body: 'x' }] })),
    },
    { name: `tables-none-1`, config: (admin) => proxyConfig({ admin, settings, sites: sites(1, 'none') }), change: tableChange(1, 'none') },
    { name: `tables-none-${N}`, config: (admin) => proxyConfig({ admin, settings, sites: sites(N, 'none') }), change: tableChange(N, 'none') },
    {
      name: `tables-mapOnly-${N}`,
      config: (admin) => {
        const c = proxyConfig({ admin, settings, sites: sites(N, 'none') });
        for (const r of (c.apps as any).http.servers.gatehouse.routes) r.match = [{ host: ['*.bench.gh.test'] }];
        return c;
      },
      change: async (c, rep) =>
        void (await c.post(ROUTES_PATH, { '@id': `r${rep}`, match: [{ host: [`x${rep}.t`] }], handle: [{ handler: 'static_response', body: 'x' }] })),
    },
    {
      name: `policies-only-${N}`,
      config: (admin) => {
        const c = proxyConfig({ admin, settings, sites: [] });
        (c.apps as any).tls.automation.policies = siteObjects(sites(N, 'self_signed')).policies;
        return c;
      },
      change: async (c, rep) => void (await c.post(POLICIES_PATH, { '@id': `p${rep}`, subjects: [`x${rep}.t`], issuers: [{ module: 'internal' }] })),
    },
    {
      name: `one-policy-${N}-subjects`,
      config: (admin) => {
        const c = proxyConfig({ admin, settings, sites: [] });
        (c.apps as any).tls.automation.policies = [
          { '@id': 'shared', subjects: sites(N, 'self_signed').map((s) => s.domain), issuers: [{ module: 'internal' }] },
        ];
        return c;
      },
      change: async (c, rep) => void (await c.post(['apps', 'tls', 'automation', 'policies', '0', 'subjects'], `x${rep}.t`)),
    },
    {
      // self-signed sites as the writer sends them: a policy each and their names in `automate` (Caddy loads every managed certificate again on each reload)
      name: `automate-${N_TLS}`,
      config: (admin) => proxyConfig({ admin, settings, sites: sites(N_TLS, 'self_signed') }),
      change: async (c, rep) => {
        await c.post(ROUTES_PATH, { '@id': `r${rep}`, match: [{ host: [`x${rep}.t`] }], handle: [{ handler: 'static_response', body: 'x' }] });
      },
    },
  ];
  const LOAD_MS = Number(process.env.LOAD_MS ?? 3000);
  for (const mode of ['tables', 'hostsdir'] as const) {
    if (!ONLY?.includes(mode)) continue;
    const caddy = await startCaddy();
    try {
      const hostsDir = join(caddy.dir, 'hosts');
      const s2: ProxySettings = { ...settings, ...(mode === 'hostsdir' ? { hostsDir } : {}) };
      const all = sites(N, 'none');
      const dirWriter = new HostDirectory(hostsDir);
      let t = performance.now();
      if (mode === 'hostsdir') await dirWriter.reconcile(hostEntries(all));
      const dirMs = performance.now() - t;
      t = performance.now();
      await caddy.client.load(proxyConfig({ admin: caddy.admin, settings: s2, sites: all }), { timeoutMs: 120_000 } as never);
      console.log(
        `${mode}: ${N} domains, directory written in ${dirMs.toFixed(0)} ms, config ${(JSON.stringify(proxyConfig({ admin: caddy.admin, settings: s2, sites: all })).length / 1024).toFixed(0)} KB loaded in ${(performance.now() - t).toFixed(0)} ms`,
      );
      const last = all.at(-1)!.domain;
      const first = all[0]!.domain;
      for (const host of [first, last]) {
        const r = await get(httpPort, host, false);
        if (r.status !== 200 || !r.body.includes(host)) throw new Error(`${host} not served: ${r.status} ${r.body}`);
      }
      const miss = await get(httpPort, 'nowhere.example', false);
      console.log(`  unknown host: ${miss.status} ${JSON.stringify(miss.body)}`);
      for (const host of [last, first, last, first]) {
        const m = await cpuPerRequest(caddy.pid, httpPort, host, LOAD_MS);
        console.log(`  ${host}: Caddy ${m.us.toFixed(0)} µs/request, ${m.rps.toFixed(0)} req/s (load ${loadavg()[0]!.toFixed(2)})`);
      }
      if (mode === 'hostsdir') {
        const times: number[] = [];
        for (let rep = 0; rep < REPS; rep++) {
          const extra = [...all, ...sites(rep + 1, 'none', 'x')];
          const host = `x${rep}.bench.gh.test`;
          const t1 = performance.now();
          await dirWriter.write(hostEntries(extra));
          const written = performance.now() - t1;
          for (;;) {
            const r = await get(httpPort, host, false);
            if (r.status === 200 && r.body.includes(host)) break;
          }
          times.push(performance.now() - t1);
          if (rep === 0) console.log(`  first add: written in ${written.toFixed(2)} ms`);
        }
        console.log(
          `  add one domain (diff of ${N} + write + first served request): median ${median(times).toFixed(2)} ms (${Math.min(...times).toFixed(2)}-${Math.max(...times).toFixed(2)})`,
        );
      }
    } finally {
      await caddy.stop();
    }
  }
  console.log(
    `Caddy reload per admin request, N=${N}, ${REPS} reps; load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  for (const v of variants) {
    if (ONLY && !ONLY.some((o) => v.name.startsWith(o))) continue;
    const caddy = await startCaddy();
    try {
      const config = v.config(caddy.admin);
      const bytes = JSON.stringify(config).length;
      const t0 = performance.now();
      await caddy.client.load(config, { timeoutMs: 120_000 } as never);
      const loadMs = performance.now() - t0;
      const times: number[] = [];
      if (v.name.startsWith('automate')) await new Promise((r) => setTimeout(r, SETTLE_MS));
      for (let rep = 0; rep < REPS; rep++) {
        const t = performance.now();
        await v.change(caddy.client, rep);
        times.push(performance.now() - t);
      }
      console.log(
        `${v.name.padEnd(28)} ${(bytes / 1024).toFixed(0).padStart(6)} KB  load ${loadMs.toFixed(0).padStart(6)} ms  change median ${median(times).toFixed(1).padStart(7)} ms  (${Math.min(...times).toFixed(1)}-${Math.max(...times).toFixed(1)})  load avg ${loadavg()[0]!.toFixed(2)}`,
      );
    } finally {
      await caddy.stop();
    }
  }
}

await main();
process.exit(0);
