/**
 * `gatehouse serve` with its own Caddy, as an operator runs it: the controller starts Caddy (admin
 * API on a unix socket in --caddy-dir), a proxy created through the API is served with a
 * certificate from Caddy's internal CA, `gatehouse renew-certificates` reports on it, SIGTERM stops
 * Caddy with the controller, and a controller that was SIGKILLed leaves a Caddy the next start
 * replaces — with every route back from the database.
 */
import { caddyAvailable, freePort } from 'caddy-api-client/testing';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { REQUIRE_SYSTEM, post } from '@gatehouse/server/testing';
import { spawnController, type ControllerProcess } from './support/processes.js';

const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));
const available = await caddyAvailable();

/** The issuer of the certificate served for `name` on 127.0.0.1:port, or the TLS error. */
function servedIssuer(port: number, name: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: name, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.issuer ?? 'none');
      socket.destroy();
    });
    socket.on('error', (err) => resolve(`error: ${err.message}`));
  });
}

async function until<T>(what: string, probe: () => Promise<T | false | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const alive = (pid: number) => existsSync(`/proc/${pid}`);

describe.skipIf(!available && !REQUIRE_SYSTEM)('gatehouse serve with its own Caddy', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-proxy-cli-'));
  const running: ControllerProcess[] = [];
  let caddyPids: number[] = [];
  afterAll(async () => {
    for (const c of running) await c.stop();
    // a Caddy a killed controller left behind (the test's own doing): stopped by its PID
    for (const pid of caddyPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves proxies through the Caddy it runs, renews on request, and stops or replaces that Caddy', async () => {
    const httpPort = await freePort();
    const httpsPort = await freePort();
    const args = ['--data-dir', join(dir, 'pglite'), '--caddy-dir', join(dir, 'caddy'), '--proxy-listen-host', '127.0.0.1'];
    const env = { DATABASE_URL: '', GATEHOUSE_PROXY: 'on', GATEHOUSE_PROXY_HTTP_PORT: String(httpPort), GATEHOUSE_PROXY_HTTPS_PORT: String(httpsPort) };
    const first = await spawnController(args, env);
    running.push(first);
    const secret = await until('the first admin token printed', async () => /\n\s+(gh_[A-Za-z0-9_-]+)\n/.exec(first.output())?.[1]);
    const api = async (url: string, query: string) => {
      const r = await post(url, secret, query);
      if (r.body.errors) throw new Error(JSON.stringify(r.body.errors));
      return r.body.data;
    };
    await api(first.url, 'mutation { createIpPool(input: { name: "p", kind: PRIVATE, network: "n", cidr: "10.254.7.0/24" }) { __typename } }');
    const host = await api(first.url, 'mutation { createHost(input: { name: "h", backend: LINUX }) { ... on CreateHostPayload { host { id } } } }');
    const vm = await api(
      first.url,
      `mutation { createInstance(input: { hostId: "${host.createHost.host.id}", name: "vm", nics: [{ network: "n" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
    );
    const created = await api(
      first.url,
      `mutation { createWebProxy(input: { instanceId: "${vm.createInstance.instance.id}", domain: "cli.gh.test", targetPort: 80, tlsMode: SELF_SIGNED }) { __typename ... on CreateWebProxyPayload { webProxy { id } } } }`,
    );
    expect(created.createWebProxy.__typename).toBe('CreateWebProxyPayload');
    expect(
      await until('served by the controller’s Caddy', async () => /Caddy Local Authority/.test(await servedIssuer(httpsPort, 'cli.gh.test')) && true),
    ).toBe(true);
    const pidFile = join(dir, 'caddy', 'caddy.pid');
    const firstCaddy = Number(readFileSync(pidFile, 'utf8'));
    caddyPids.push(firstCaddy);
    expect(readFileSync(`/proc/${firstCaddy}/cmdline`, 'utf8')).toContain('caddy');

    // the renewal scan from the command line: the internal CA's certificate is not due
    const out = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(
        process.execPath,
        ['--import', 'tsx', 'src/cli.ts', 'renew-certificates', '--controller', first.url, '--token', secret],
        { cwd: CLI_DIR, timeout: 60_000 },
        (error, stdout) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout }),
      ),
    );
    expect(out.stdout).toMatch(/OK\s+cli\.gh\.test/);
    expect(out.stdout).toMatch(/1 certificates: 0 renewed, 0 failed, 0 uploaded to replace, 1 not due/);
    expect(out.code).toBe(0);

    // SIGTERM: Caddy goes with the controller
    await first.stop();
    running.pop();
    expect(alive(firstCaddy)).toBe(false);
    expect((await servedIssuer(httpsPort, 'cli.gh.test')).startsWith('error')).toBe(true);

    // a controller killed outright leaves its Caddy running; the next start replaces it
    const second = await spawnController(args, env);
    running.push(second);
    await until('served again after restart', async () => /Caddy Local Authority/.test(await servedIssuer(httpsPort, 'cli.gh.test')) && true);
    const secondCaddy = Number(readFileSync(pidFile, 'utf8'));
    caddyPids.push(secondCaddy);
    second.child.kill('SIGKILL');
    await new Promise((r) => second.child.once('exit', r));
    running.pop();
    expect(alive(secondCaddy)).toBe(true);
    const third = await spawnController(args, env);
    running.push(third);
    await until('left-over Caddy replaced', async () => !alive(secondCaddy));
    await until('served by the new Caddy', async () => /Caddy Local Authority/.test(await servedIssuer(httpsPort, 'cli.gh.test')) && true);
    const thirdCaddy = Number(readFileSync(pidFile, 'utf8'));
    caddyPids.push(thirdCaddy);
    expect(thirdCaddy).not.toBe(secondCaddy);
    const status = await api(third.url, `{ webProxies { edges { node { domain status certificateStatus { issuer } } } } }`);
    expect(status.webProxies.edges[0].node).toMatchObject({ domain: 'cli.gh.test', status: 'APPLIED' });
  }, 180_000);
});
