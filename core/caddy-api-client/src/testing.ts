/**
 * caddy-api-client/testing — a real `caddy run` for tests (this package's and its users'): temp dir for its config, storage and admin socket, the admin API
 * on a unix socket or a free loopback port, readiness by polling the API, and stop by PID. And a real ACME CA for Caddy to get certificates from:
 * pebble with pebble-challtestsrv as its DNS, on loopback ports.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaddyAdminClient, type CaddyAdminConfig, type CaddyConfig } from './index.js';

/** The caddy binary (GATEHOUSE_CADDY_BIN overrides PATH lookup). */
export const CADDY_BIN = process.env.GATEHOUSE_CADDY_BIN ?? 'caddy';

/** Whether `caddy version` runs here. */
export function caddyAvailable(): Promise<boolean> {
  return new Promise((resolve) => execFile(CADDY_BIN, ['version'], { timeout: 5000 }, (error) => resolve(!error)));
}

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Options for `startCaddy`. */
export interface StartCaddyOptions {
  /** Where the admin API listens: a unix socket in the temp dir (default) or a free loopback port. */
  admin?: 'unix' | 'tcp';
  /** TCP only: turn on `enforce_origin` with `origins: ["127.0.0.1:<port>"]`. */
  enforceOrigin?: boolean;
  /** The rest of the initial config (apps …). */
  config?: CaddyConfig;
}

/** A running Caddy started by a test. */
export interface CaddyProcess {
  pid: number;
  dir: string;
  /** The admin section the process was started with. */
  admin: CaddyAdminConfig;
  /** A client for its admin API. */
  client: CaddyAdminClient;
  /** Its log so far (stdout and stderr). */
  log(): string;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Stops it (SIGTERM, then SIGKILL after 5 s) by PID and removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

/** Starts `caddy run --config <temp file>` and resolves once its admin API answers. */
export async function startCaddy(options: StartCaddyOptions = {}): Promise<CaddyProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'caddy-api-client-'));
  let admin: CaddyAdminConfig;
  let client: CaddyAdminClient;
  if (options.admin === 'tcp') {
    const port = await freePort();
    admin = { listen: `127.0.0.1:${port}`, config: { persist: false } };
    if (options.enforceOrigin) Object.assign(admin, { enforce_origin: true, origins: [`127.0.0.1:${port}`] });
    client = new CaddyAdminClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 5000 });
  } else {
    const socketPath = join(dir, 'admin.sock');
    admin = { listen: `unix/${socketPath}`, config: { persist: false } };
    client = new CaddyAdminClient({ socketPath, timeoutMs: 5000 });
  }
  const configFile = join(dir, 'caddy.json');
  writeFileSync(configFile, JSON.stringify({ ...options.config, admin }));

  // Caddy keeps certificates, its CA and autosaves under XDG dirs / HOME: all inside the temp dir.
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
  let caddy: LoggedChild;
  try {
    caddy = await spawnLogged(CADDY_BIN, ['run', '--config', configFile], dir, 'caddy', env);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const { pid, log } = caddy;
  const exited = caddy.exited;
  const stop = async () => {
    await caddy.stop();
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await client.getConfig('admin', { timeoutMs: 1000 });
      break;
    } catch (error) {
      if (exited() || Date.now() > deadline) {
        const output = log();
        await stop();
        throw new Error(`caddy did not become ready (${exited() ? 'exited' : 'timeout'}): ${(error as Error).message}\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { pid, dir, admin, client, log, exited, stop };
}

/** A plain HTTP GET on its own connection (no pooling across Caddy reloads); `host` sets the Host header. */
export function httpGet(url: string, host?: string): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: host ? { host } : {}, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// pebble: a real ACME server

/** The pebble binary (GATEHOUSE_PEBBLE_BIN overrides PATH lookup). */
export const PEBBLE_BIN = process.env.GATEHOUSE_PEBBLE_BIN ?? 'pebble';
/** pebble's DNS server for tests (GATEHOUSE_CHALLTESTSRV_BIN overrides PATH lookup). */
export const CHALLTESTSRV_BIN = process.env.GATEHOUSE_CHALLTESTSRV_BIN ?? 'pebble-challtestsrv';
/** openssl makes the CA for pebble's own HTTPS listener (node:crypto cannot write certificates). */
const OPENSSL_BIN = 'openssl';

/** Whether `bin args` starts and exits at all (any exit code: Go's `-help` exits 0 or 2 depending on the Go version; only a missing binary counts). */
function starts(bin: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) =>
    execFile(bin, args, { timeout: 5000 }, (error) => resolve(!error || typeof (error as NodeJS.ErrnoException & { code?: unknown }).code === 'number')),
  );
}

/** Whether pebble, pebble-challtestsrv and openssl all run here (Debian: `apt-get install pebble`). */
export async function pebbleAvailable(): Promise<boolean> {
  const found = await Promise.all([starts(PEBBLE_BIN, ['-help']), starts(CHALLTESTSRV_BIN, ['-help']), starts(OPENSSL_BIN, ['version'])]);
  return found.every(Boolean);
}

/** `count` distinct free loopback ports (freePort can hand out the same port twice once it is closed again). */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function run(bin: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(bin, args, { cwd, timeout: 10_000 }, (error, _stdout, stderr) =>
      error ? reject(new Error(`${bin} ${args.join(' ')} failed: ${error.message}\n${stderr}`)) : resolve(),
    ),
  );
}

/** A spawned child whose stdout and stderr go to a file in the temp dir, stopped by PID. */
interface LoggedChild {
  pid: number;
  log(): string;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after 5 s; safe to call twice. */
  stop(): Promise<void>;
}

async function spawnLogged(bin: string, args: string[], dir: string, name: string, env: NodeJS.ProcessEnv): Promise<LoggedChild> {
  const logFile = join(dir, `${name}.log`);
  const logFd = openSync(logFile, 'w');
  const child: ChildProcess = spawn(bin, args, { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  let exited = false;
  let spawnError: Error | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (error) => {
      spawnError = error;
      exited = true;
      resolve();
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    await exit;
    throw new Error(`could not start ${bin}: ${spawnError?.message ?? 'no pid'}`);
  }
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const kill = (signal: NodeJS.Signals) => {
    try {
      if (!exited) process.kill(pid, signal);
    } catch {
      // it exited between the check and the kill
    }
  };
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (exited) return;
      kill('SIGTERM');
      const timer = setTimeout(() => kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    })());
  return { pid, log, exited: () => exited, stop };
}

/** A GET over HTTPS trusting only `ca` (pebble's listener has a certificate from our own throwaway CA). */
function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { agent: false, ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Options for `startPebble`. */
export interface StartPebbleOptions {
  /**
   * The port pebble validates HTTP-01 challenges on: the `http_port` of the Caddy that asks for certificates (Caddy answers the challenge there).
   * Every name resolves to 127.0.0.1 (pebble-challtestsrv's default answer), so this is 127.0.0.1:<httpPort>.
   */
  httpPort: number;
}

/** A running pebble (and the pebble-challtestsrv it uses as DNS) started by a test. */
export interface PebbleProcess {
  /** The ACME directory: an ACME issuer's `ca`. */
  directoryUrl: string;
  /** PEM file of the CA behind pebble's own HTTPS listener: an ACME issuer's `trusted_roots_pem_files`, or `ca` for Node clients. */
  caCertFile: string;
  /** The port HTTP-01 challenges are validated on (as given). */
  httpPort: number;
  /**
   * PEM of the root pebble issues under (made fresh at each start): trust this to verify certificates Caddy obtained. Only the root: Caddy serves
   * pebble's intermediate in its chain.
   */
  issuerRootsPem(): Promise<string>;
  /** Both processes' logs so far. */
  log(): string;
  /** Stops both processes (SIGTERM, then SIGKILL after 5 s) by PID and removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts pebble-challtestsrv and pebble on free loopback ports and resolves once pebble's ACME directory answers. Challenges are really validated
 * (PEBBLE_VA_ALWAYS_VALID is never passed on), HTTP-01 only in practice: point the Caddy's `http_port` at `httpPort` and disable its TLS-ALPN challenge.
 */
export async function startPebble(options: StartPebbleOptions): Promise<PebbleProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'caddy-api-client-pebble-'));
  const children: LoggedChild[] = [];
  const log = () => children.map((child, i) => `--- ${i === 0 ? CHALLTESTSRV_BIN : PEBBLE_BIN} ---\n${child.log()}`).join('\n');
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await Promise.all(children.map((child) => child.stop()));
      rmSync(dir, { recursive: true, force: true });
    })());

  try {
    // pebble's own HTTPS listener needs a certificate for 127.0.0.1; a throwaway CA in the temp dir signs it, so clients trust that CA and nothing else.
    const caKey = join(dir, 'ca.key');
    const caCertFile = join(dir, 'ca.pem');
    const key = join(dir, 'pebble.key');
    const csr = join(dir, 'pebble.csr');
    const cert = join(dir, 'pebble.pem');
    const ext = join(dir, 'pebble.ext');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await run(
      OPENSSL_BIN,
      ['req', '-x509', ...ec, '-keyout', caKey, '-out', caCertFile, '-days', '2', '-subj', '/CN=caddy-api-client pebble listener CA'],
      dir,
    );
    await run(OPENSSL_BIN, ['req', '-new', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=localhost'], dir);
    writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    await run(
      OPENSSL_BIN,
      ['x509', '-req', '-in', csr, '-CA', caCertFile, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext],
      dir,
    );
    const caPem = readFileSync(caCertFile, 'utf8');

    const [dnsPort, challManagementPort, listenPort, managementPort, tlsPort] = (await freePorts(5)) as [number, number, number, number, number];
    // pebble resolves names through challtestsrv, which answers 127.0.0.1 for every A query: validation of any test domain reaches 127.0.0.1:httpPort.
    // No AAAA answer (an empty -defaultIPv6), or pebble would try ::1 first, where the test's Caddy does not listen. Its own challenge servers are off
    // (empty addresses) — Caddy answers the challenges, and they would take fixed default ports.
    children.push(
      await spawnLogged(
        CHALLTESTSRV_BIN,
        [
          ...['-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''],
          ...['-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', ''],
          ...['-management', `127.0.0.1:${challManagementPort}`],
        ],
        dir,
        'challtestsrv',
        process.env,
      ),
    );

    const config = join(dir, 'pebble.json');
    writeFileSync(
      config,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${listenPort}`,
          managementListenAddress: `127.0.0.1:${managementPort}`,
          certificate: cert,
          privateKey: key,
          httpPort: options.httpPort,
          // TLS-ALPN-01 validation port: unused (the Caddy disables that challenge), but pebble's default 5001 could be taken.
          tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
        },
      }),
    );
    // pebble reads its test knobs from PEBBLE_* variables: none are inherited (PEBBLE_VA_ALWAYS_VALID would skip validation). NOSLEEP drops the random
    // 0-15 s delay before each validation; NONCEREJECT=0 stops it refusing 5% of good nonces (ACME clients retry those, but slower and noisier).
    const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PEBBLE_')));
    Object.assign(env, { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' });
    children.push(await spawnLogged(PEBBLE_BIN, ['-config', config, '-dnsserver', `127.0.0.1:${dnsPort}`], dir, 'pebble', env));

    const directoryUrl = `https://127.0.0.1:${listenPort}/dir`;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const { status, body } = await httpsGet(directoryUrl, caPem);
        if (status === 200 && JSON.parse(body).newAccount) break;
        throw new Error(`GET ${directoryUrl}: ${status} ${body}`);
      } catch (error) {
        const exited = children.find((child) => child.exited());
        if (exited || Date.now() > deadline) {
          throw new Error(`pebble did not become ready (${exited ? 'a process exited' : 'timeout'}): ${(error as Error).message}\n${log()}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }

    const issuerRootsPem = async () => {
      const { status, body } = await httpsGet(`https://127.0.0.1:${managementPort}/roots/0`, caPem);
      if (status !== 200) throw new Error(`GET pebble /roots/0: ${status} ${body}`);
      return body;
    };
    return { directoryUrl, caCertFile, httpPort: options.httpPort, issuerRootsPem, log, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
