/**
 * The embedded default as a newcomer meets it, as root: `gatehouse serve` on PGlite creates the
 * sandbox host and its two demo instances and prints what to do; the test does exactly that — the
 * printed createPortForward through GraphQL, then the printed curl from this machine's namespace —
 * and reads the demo server's answer through the forward. SIGTERM removes the sandbox; a restart
 * on the same data directory brings it back with the forward still working, and the machine's own
 * ruleset never gets a Gatehouse table.
 */
import { labAvailable } from '@gatehouse/sdk/testkit';
import { REQUIRE_SYSTEM, post } from '@gatehouse/server/testing';
import { caddyAvailable, freePort } from 'caddy-api-client/testing';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SANDBOX_LAYOUT } from '../src/sandbox/sandbox-layout.js';
import { SANDBOX_STATE_FILE } from '../src/sandbox/sandbox-network.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const available = await labAvailable();
// the controller's own Caddy on free ports, for a web proxy to a sandbox instance
const withCaddy = await caddyAvailable();
const [proxyHttpPort, proxyHttpsPort] = [await freePort(), await freePort()];

/** `gatehouse serve` from source, run from the repository root as the README's command does. */
interface Serve {
  child: ChildProcess;
  output(): string;
  waitFor(pattern: RegExp, ms?: number): Promise<RegExpExecArray>;
  exited: Promise<number | null>;
}

function serve(dataDir: string): Serve {
  const child = spawn(process.execPath, ['--import', 'tsx', 'core/cli/src/cli.ts', 'serve', '--port', '0', '--data-dir', dataDir], {
    cwd: REPO,
    // PGlite, and the sandbox on even where the test runner turns it off for other tests
    env: {
      ...process.env,
      DATABASE_URL: '',
      GATEHOUSE_SANDBOX: 'on',
      GATEHOUSE_PROXY: withCaddy ? 'on' : 'off',
      GATEHOUSE_PROXY_LISTEN_HOST: '127.0.0.1',
      GATEHOUSE_PROXY_HTTP_PORT: String(proxyHttpPort),
      GATEHOUSE_PROXY_HTTPS_PORT: String(proxyHttpsPort),
      GATEHOUSE_CADDY_DIR: join(dataDir, '..', `${basename(dataDir)}-caddy`),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    waitFor: async (pattern, ms = 90_000) => {
      const end = Date.now() + ms;
      for (;;) {
        const m = pattern.exec(out);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > end) throw new Error(`no ${pattern} in the controller's output:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

/** GET from this machine's namespace: the body, or the error code. */
function httpGet(url: string, host?: string): Promise<string> {
  return new Promise((resolve) => {
    // a new connection each time, as curl makes one
    const req = request(url, { timeout: 2000, agent: false, ...(host ? { headers: { host } } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(`error:${err.code ?? err.message}`));
    req.end();
  });
}

async function until(probe: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return probe();
}

function ip(args: string[]): Promise<string> {
  return new Promise((resolve) => execFile('ip', args, (err, stdout) => resolve(err ? '' : stdout)));
}

const sandboxNamespaces = async () =>
  (await ip(['netns', 'list']))
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n === SANDBOX_LAYOUT.hostNetns || n.startsWith(SANDBOX_LAYOUT.namespacePrefix));

const gatehouseTableInRootNamespace = () =>
  new Promise<boolean>((resolve) => execFile('nft', ['list', 'tables'], (err, stdout) => resolve(!err && /inet gatehouse/.test(stdout))));

/** Waits for the end of the sandbox walkthrough; fails at once with the reason when the controller says there is no sandbox. */
async function sandboxReady(s: Serve): Promise<void> {
  const [line] = await s.waitFor(/^Stopping the controller.*|^No sandbox host: .*/m);
  if (line.startsWith('No sandbox host')) throw new Error(`the controller started without the sandbox:\n${s.output()}`);
}

/** Stops a controller with SIGTERM and returns its exit code. */
async function terminate(s: Serve): Promise<number | null> {
  if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
  return s.exited;
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('the embedded default as root: sandbox host, demo instances, in-process agent', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-sandbox-'));
  const started: Serve[] = [];
  let admin = '';
  let curlUrl = '';
  let answer = '';
  const hadGatehouseTable = gatehouseTableInRootNamespace();

  afterAll(async () => {
    for (const s of started) {
      if (s.child.exitCode !== null || s.child.signalCode !== null) continue;
      s.child.kill('SIGKILL');
      await s.exited;
    }
    // a controller of ours killed before cleaning up: remove what it made (never another's sandbox)
    const owner = existsSync(SANDBOX_STATE_FILE) ? (JSON.parse(readFileSync(SANDBOX_STATE_FILE, 'utf8')) as { pid: number }).pid : undefined;
    if (owner !== undefined && started.some((s) => s.child.pid === owner)) {
      await ip(['link', 'del', SANDBOX_LAYOUT.rootIf]);
      for (const ns of await sandboxNamespaces()) await ip(['netns', 'del', ns]);
      rmSync(SANDBOX_STATE_FILE, { force: true });
    }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(join(dataDir, '..', `${basename(dataDir)}-caddy`), { recursive: true, force: true });
  }, 60_000);

  it('prints a createPortForward and a curl that work as printed, and removes the sandbox on SIGTERM', async () => {
    const first = serve(dataDir);
    started.push(first);
    const [, url] = await first.waitFor(/listening on (http:\/\/\S+)/);
    admin = (await first.waitFor(/keep it:\s+(gh_\S+)/))[1]!;
    await sandboxReady(first);
    const [, curl, hello] = await first.waitFor(/^ {4}curl (http:\/\/\S+)\n {4}(hello from web1 \(\S+\))$/m);
    expect(first.output()).toMatch(new RegExp(`Sandbox host "sandbox" \\(id [0-9a-f-]{36}\\)`));
    curlUrl = curl!;
    answer = hello!;
    expect(curlUrl).toBe(`http://${SANDBOX_LAYOUT.publicAddress}:8080/`);
    expect(await sandboxNamespaces()).toEqual(expect.arrayContaining(['gh-sandbox', 'gh-sandbox-web1', 'gh-sandbox-web2']));

    // nothing forwards the port yet
    expect(await httpGet(curlUrl)).toMatch(/^error:/);

    const mutation = (await first.waitFor(/^mutation \{\n {2}createPortForward[\s\S]*?\n\}$/m))[0];
    const created = await post(url!, admin, mutation);
    expect(created.body.data?.createPortForward).toMatchObject({
      portForward: { hostPorts: { start: 8080 }, targetAddress: expect.stringMatching(/^10\.89\.0\./) },
    });

    expect(await until(async () => (await httpGet(curlUrl)) === `${answer}\n`, 20_000)).toBe(true);
    expect(await gatehouseTableInRootNamespace()).toBe(await hadGatehouseTable);

    // a web proxy to the same instance, served by the Caddy the controller runs
    if (withCaddy || REQUIRE_SYSTEM) {
      const instanceId = /instanceId: "([0-9a-f-]{36})"/.exec(mutation!)![1];
      const proxy = await post(
        url!,
        admin,
        `mutation { createWebProxy(input: { instanceId: "${instanceId}", domain: "web1.sandbox.test", targetPort: 80, tlsMode: NONE }) { __typename ... on Error { message } } }`,
      );
      expect(proxy.body.data?.createWebProxy.__typename).toBe('CreateWebProxyPayload');
      const viaCaddy = `http://127.0.0.1:${proxyHttpPort}/`;
      expect(await until(async () => (await httpGet(viaCaddy, 'web1.sandbox.test')) === `${answer}\n`, 20_000)).toBe(true);
    }

    expect(await terminate(first)).toBe(0);
    expect(await sandboxNamespaces()).toEqual([]);
    expect(await ip(['link', 'show', SANDBOX_LAYOUT.rootIf])).toBe('');
    expect(existsSync(SANDBOX_STATE_FILE)).toBe(false);
    // (no request now: without the sandbox's link, it would leave through the default route)
  }, 180_000);

  it('comes back on the same data directory with the same objects, and the forward answers again', async () => {
    const second = serve(dataDir);
    started.push(second);
    await sandboxReady(second);
    expect(second.output()).not.toContain('gh_'); // no bootstrap token, no agent secret
    expect(second.output()).toContain(`curl ${curlUrl}   → web1`);
    expect(await httpGet(curlUrl)).toBe(`${answer}\n`); // applied before the walkthrough is printed
    // the walkthrough moves on to the next instance and port; it works as printed too
    const [, url] = await second.waitFor(/listening on (http:\/\/\S+)/);
    const [, curl2, hello2] = await second.waitFor(/^ {4}curl (http:\/\/\S+)\n {4}(hello from web2 \(\S+\))$/m);
    expect(curl2).toBe(`http://${SANDBOX_LAYOUT.publicAddress}:8081/`);
    const mutation = (await second.waitFor(/^mutation \{\n {2}createPortForward[\s\S]*?\n\}$/m))[0];
    expect((await post(url!, admin, mutation)).body.data?.createPortForward.portForward).toBeTruthy();
    expect(await until(async () => (await httpGet(curl2!)) === `${hello2}\n`, 20_000)).toBe(true);
    const hosts = await post(url!, admin, '{ hosts { edges { node { name backend publicAddresses } } } }');
    expect(hosts.body.data.hosts.edges).toEqual([{ node: { name: 'sandbox', backend: 'linux', publicAddresses: [SANDBOX_LAYOUT.publicAddress] } }]);

    expect(await terminate(second)).toBe(0);
    expect(await sandboxNamespaces()).toEqual([]);
  }, 180_000);
});
