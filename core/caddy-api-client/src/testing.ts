/**
 * caddy-api-client/testing — a real `caddy run` for tests (this package's and its users'): temp dir for its config, storage and admin socket, the admin API
 * on a unix socket or a free loopback port, readiness by polling the API, and stop by PID.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { request } from 'node:http';
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

  const logFile = join(dir, 'caddy.log');
  const logFd = openSync(logFile, 'w');
  // Caddy keeps certificates, its CA and autosaves under XDG dirs / HOME: all inside the temp dir.
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
  const child: ChildProcess = spawn(CADDY_BIN, ['run', '--config', configFile], { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
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
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start ${CADDY_BIN}: ${spawnError?.message ?? 'no pid'}`);
  }

  const log = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => !exited && process.kill(pid, 'SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await client.getConfig('admin', { timeoutMs: 1000 });
      break;
    } catch (error) {
      if (exited || Date.now() > deadline) {
        const output = log();
        await stop();
        throw new Error(`caddy did not become ready (${exited ? 'exited' : 'timeout'}): ${(error as Error).message}\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { pid, dir, admin, client, log, exited: () => exited, stop };
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
