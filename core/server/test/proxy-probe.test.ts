/**
 * probeTarget on real sockets: HTTP and HTTPS servers on loopback (IPv4 and IPv6), each probed with
 * the right and the wrong protocol, a closed port, servers that answer neither HTTP nor TLS, and —
 * as root — real packet loss and ICMP errors from a network namespace behind a veth pair whose
 * nftables input chain drops one port and rejects another with host-unreachable.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeTarget, type ProbeOptions, type ProbeResult, type ProbeTarget } from '../src/proxy/probe.js';
import { selfSignedCertificate } from './support/certificates.js';
import { REQUIRE_SYSTEM } from '../src/testing/stores.js';

const run = promisify(execFile);

/** Listens on a random port of `host` and returns it. */
async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on: the kernel picked it free, and it is closed again. */
async function freePort(): Promise<number> {
  const server = createTcpServer();
  const port = await listen(server, '127.0.0.1');
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const PROBE_MODULE = new URL('../src/proxy/probe.ts', import.meta.url).href;
/** Imports the probe in a fresh Node process, runs the probes given as JSON, and reports how long the process lived after the last one. */
const CHILD_SCRIPT = `
const { probeTarget } = await import(process.argv[1]);
const results = [];
for (const [target, options] of JSON.parse(process.argv[2])) results.push(await probeTarget(target, options));
const done = performance.now();
process.on('exit', () => process.stdout.write(JSON.stringify({ results, lingerMs: performance.now() - done })));
`;

/**
 * Runs probes in a child process: a timer or socket the probe left behind keeps that process alive
 * after the last probe resolved (a 3 s timer, or a SYN retrying for minutes), which `lingerMs` shows.
 */
async function probeInChild(probes: [ProbeTarget, ProbeOptions?][]): Promise<{ results: ProbeResult[]; lingerMs: number }> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD_SCRIPT, PROBE_MODULE, JSON.stringify(probes)], {
    timeout: 10_000,
  });
  return JSON.parse(stdout) as { results: ProbeResult[]; lingerMs: number };
}

function expectResult(r: ProbeResult, state: ProbeResult['state'], where: string, maxMs: number) {
  expect(r.state, r.detail).toBe(state);
  expect(r.detail).toContain(where);
  expect(r.elapsedMs).toBeGreaterThanOrEqual(0);
  expect(r.elapsedMs).toBeLessThan(maxMs);
}

describe('probeTarget on loopback', () => {
  const servers: Server[] = [];
  const connections = new Set<Socket>();
  const ports: Record<string, number> = {};

  /** Listens on `host`; afterAll closes the server and whatever connections it still holds. */
  const start = async (name: string, server: Server, host = '127.0.0.1') => {
    servers.push(server);
    server.on('connection', (socket: Socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
    });
    ports[name] = await listen(server, host);
  };

  beforeAll(async () => {
    const { certificatePem, privateKeyPem } = selfSignedCertificate(['localhost'], 1);
    // a 500: the probe judges connectivity, not the application
    const http = () => createHttpServer((_req, res) => res.writeHead(500).end('broken app'));
    const https = () => createHttpsServer({ cert: certificatePem, key: privateKeyPem }, (_req, res) => res.end('ok'));
    await start('http', http());
    await start('https', https());
    await start('http6', http(), '::1');
    await start('https6', https(), '::1');
    await start(
      'hello',
      createTcpServer((socket) => socket.end('hello\n')),
    );
    // what Go's net/http answers a plain request on a TLS port, here from a server that speaks no TLS
    await start(
      'goHint',
      createTcpServer((socket) => socket.end('HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n')),
    );
    // reads what it gets (so it sees the probe close) and never answers
    await start(
      'silent',
      createTcpServer((socket) => socket.on('error', () => {}).resume()),
    );
  });

  afterAll(async () => {
    const closed = servers.map((server) => new Promise((resolve) => server.close(resolve)));
    for (const socket of connections) socket.destroy();
    await Promise.all(closed);
  });

  it('reports ok for an HTTP server probed as http, even when it answers 500', async () => {
    const r = await probeTarget({ address: '127.0.0.1', port: ports.http!, protocol: 'http' });
    expectResult(r, 'ok', `127.0.0.1:${ports.http}`, 1000);
    expect(r.detail).toContain('HTTP/1.1 500');
  });

  it('reports ok for an HTTPS server with a self-signed certificate probed as https', async () => {
    const r = await probeTarget({ address: '127.0.0.1', port: ports.https!, protocol: 'https' });
    expectResult(r, 'ok', `127.0.0.1:${ports.https}`, 1000);
    expect(r.detail).toMatch(/TLSv1\.[23]/);
  });

  it('probes IPv6 targets and brackets them in the detail', async () => {
    const http = await probeTarget({ address: '::1', port: ports.http6!, protocol: 'http' });
    expectResult(http, 'ok', `[::1]:${ports.http6}`, 1000);
    const https = await probeTarget({ address: '::1', port: ports.https6!, protocol: 'https' });
    expectResult(https, 'ok', `[::1]:${ports.https6}`, 1000);
    const mismatch = await probeTarget({ address: '::1', port: ports.https6!, protocol: 'http' });
    expectResult(mismatch, 'tls_mismatch', `[::1]:${ports.https6}`, 1000);
  });

  it('reports connection_refused for a port nothing listens on', async () => {
    const port = await freePort();
    const r = await probeTarget({ address: '127.0.0.1', port, protocol: 'http' });
    expectResult(r, 'connection_refused', `127.0.0.1:${port}`, 1000);
    expect(r.detail).toBe(`127.0.0.1:${port} refused the connection (nothing listens on the port)`);
  });

  it('reports tls_mismatch for an HTTP server probed as https', async () => {
    const r = await probeTarget({ address: '127.0.0.1', port: ports.http!, protocol: 'https' });
    expectResult(r, 'tls_mismatch', `127.0.0.1:${ports.http}`, 1000);
    expect(r.detail).toMatch(/speaks plain HTTP.*set the protocol to HTTP$/);
  });

  it('reports tls_mismatch for an HTTPS server probed as http', async () => {
    const r = await probeTarget({ address: '127.0.0.1', port: ports.https!, protocol: 'http' });
    expectResult(r, 'tls_mismatch', `127.0.0.1:${ports.https}`, 1000);
    expect(r.detail).toMatch(/speaks TLS.*set the protocol to HTTPS$/);
  });

  it("reports tls_mismatch for Go's 400 to a plain request on its TLS port", async () => {
    const r = await probeTarget({ address: '127.0.0.1', port: ports.goHint!, protocol: 'http' });
    expectResult(r, 'tls_mismatch', `127.0.0.1:${ports.goHint}`, 1000);
    expect(r.detail).toContain('Client sent an HTTP request to an HTTPS server');
  });

  it('reports bad_response for a server that answers neither HTTP nor TLS', async () => {
    const http = await probeTarget({ address: '127.0.0.1', port: ports.hello!, protocol: 'http' });
    expectResult(http, 'bad_response', `127.0.0.1:${ports.hello}`, 1000);
    expect(http.detail).toContain('"hello\\n"');
    // the TLS handshake fails with "wrong version number", but the HTTP check shows it is not HTTP either
    const https = await probeTarget({ address: '127.0.0.1', port: ports.hello!, protocol: 'https' });
    expectResult(https, 'bad_response', `127.0.0.1:${ports.hello}`, 1000);
    expect(https.detail).toContain('does not answer plain HTTP either');
  });

  it('reports bad_response for a server that accepts and stays silent, within the timeout', async () => {
    const http = await probeTarget({ address: '127.0.0.1', port: ports.silent!, protocol: 'http' }, { timeoutMs: 300 });
    expectResult(http, 'bad_response', `127.0.0.1:${ports.silent}`, 800);
    expect(http.elapsedMs).toBeGreaterThanOrEqual(290);
    expect(http.detail).toContain('sent no reply to an HTTP request within 300 ms');
    const https = await probeTarget({ address: '127.0.0.1', port: ports.silent!, protocol: 'https' }, { timeoutMs: 300 });
    expectResult(https, 'bad_response', `127.0.0.1:${ports.silent}`, 800);
    expect(https.detail).toContain('did not complete a TLS handshake within 300 ms');
  });

  it('leaves no timer or socket behind, whichever way a probe ends', async () => {
    const local = (name: string, protocol: 'http' | 'https'): [ProbeTarget] => [{ address: '127.0.0.1', port: ports[name]!, protocol }];
    const { results, lingerMs } = await probeInChild([
      local('http', 'http'),
      local('https', 'https'),
      local('http', 'https'),
      local('https', 'http'),
      local('goHint', 'http'),
      local('hello', 'http'),
      local('hello', 'https'),
      [{ address: '127.0.0.1', port: await freePort(), protocol: 'http' }],
      [{ address: '127.0.0.1', port: ports.silent!, protocol: 'http' }, { timeoutMs: 200 }],
      [{ address: '127.0.0.1', port: ports.silent!, protocol: 'https' }, { timeoutMs: 200 }],
    ]);
    expect(results.map((r) => r.state)).toEqual([
      'ok',
      'ok',
      'tls_mismatch',
      'tls_mismatch',
      'tls_mismatch',
      'bad_response',
      'bad_response',
      'connection_refused',
      'bad_response',
      'bad_response',
    ]);
    // every other probe had the default 3 s budget: a timer left running would hold the process that long
    expect(lingerMs).toBeLessThan(500);
  });

  it('rejects a port outside 1-65535', async () => {
    await expect(probeTarget({ address: '127.0.0.1', port: 0, protocol: 'http' })).rejects.toThrow(RangeError);
  });
});

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot && !REQUIRE_SYSTEM)('probeTarget across a network namespace', () => {
  const ns = `ghprobe-${process.pid}`;
  const rootIf = `ghp${process.pid}r`;
  const nsIf = `ghp${process.pid}n`;
  // a /30 of the shared address space (RFC 6598) per process, so parallel runs do not collide
  const base = (process.pid % 64) * 4;
  const rootAddress = `100.64.250.${base + 1}`;
  const nsAddress = `100.64.250.${base + 2}`;
  const DROPPED = 9;
  const REJECTED = 10;
  const CLOSED = 11;
  let dir: string | undefined;

  /** Removes what a previous (crashed) run or this one left; the veth pair goes with either end. */
  const cleanup = async () => {
    await run('ip', ['link', 'del', rootIf]).catch(() => {});
    await run('ip', ['netns', 'del', ns]).catch(() => {});
  };

  beforeAll(async () => {
    await cleanup();
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', rootIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns]);
    await run('ip', ['addr', 'add', `${rootAddress}/30`, 'dev', rootIf]);
    await run('ip', ['link', 'set', rootIf, 'up']);
    await run('ip', ['-n', ns, 'addr', 'add', `${nsAddress}/30`, 'dev', nsIf]);
    await run('ip', ['-n', ns, 'link', 'set', nsIf, 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const rule = (port: number, verdict: object) => ({
      rule: {
        family: 'inet',
        table: 'ghprobe',
        chain: 'input',
        expr: [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: port } }, verdict],
      },
    });
    const ruleset = {
      nftables: [
        { table: { family: 'inet', name: 'ghprobe' } },
        { chain: { family: 'inet', table: 'ghprobe', name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' } },
        rule(DROPPED, { drop: null }),
        rule(REJECTED, { reject: { type: 'icmpx', expr: 'host-unreachable' } }),
      ],
    };
    dir = await mkdtemp(join(tmpdir(), 'ghprobe-'));
    const file = join(dir, 'ruleset.json');
    await writeFile(file, JSON.stringify(ruleset));
    await run('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', file]);
  });

  afterAll(async () => {
    await cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reaches the namespace: a port without a listener is refused by its kernel', async () => {
    const r = await probeTarget({ address: nsAddress, port: CLOSED, protocol: 'http' }, { timeoutMs: 2000 });
    expectResult(r, 'connection_refused', `${nsAddress}:${CLOSED}`, 1000);
  });

  it('reports timeout when the SYN is dropped, after timeoutMs', async () => {
    for (const protocol of ['http', 'https'] as const) {
      const r = await probeTarget({ address: nsAddress, port: DROPPED, protocol }, { timeoutMs: 500 });
      expectResult(r, 'timeout', `${nsAddress}:${DROPPED}`, 1500);
      expect(r.elapsedMs).toBeGreaterThanOrEqual(490);
      expect(r.detail).toBe(`${nsAddress}:${DROPPED} did not answer within 500 ms (unreachable or filtered)`);
    }
  });

  it('destroys the connecting socket on timeout: the kernel would retry the SYN for minutes', async () => {
    const { results, lingerMs } = await probeInChild([[{ address: nsAddress, port: DROPPED, protocol: 'http' }, { timeoutMs: 300 }]]);
    expect(results[0]!.state).toBe('timeout');
    expect(lingerMs).toBeLessThan(500);
  });

  it('reports unreachable when the target answers with ICMP host-unreachable', async () => {
    const r = await probeTarget({ address: nsAddress, port: REJECTED, protocol: 'http' }, { timeoutMs: 2000 });
    expectResult(r, 'unreachable', `${nsAddress}:${REJECTED}`, 1000);
    expect(r.detail).toBe(`${nsAddress}:${REJECTED} is unreachable: no route to the host (EHOSTUNREACH)`);
  });
});
