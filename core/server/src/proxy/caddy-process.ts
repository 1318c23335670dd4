/**
 * A Caddy the controller runs itself (the embedded default): `caddy run` with only its admin
 * endpoint on a unix socket in the data directory — the proxy manager loads the rest and notices
 * when a restarted Caddy has lost it. Restarted with backoff when it exits; stopped by its PID.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CaddyAdminConfig } from 'caddy-api-client';
import type { Logger } from '../support/logger.js';

/** Whether `<binary> version` runs. */
export function caddyBinaryWorks(binary: string): Promise<boolean> {
  return new Promise((resolve) => execFile(binary, ['version'], { timeout: 5000 }, (error) => resolve(!error)));
}

export class CaddySupervisor {
  readonly socketPath: string;
  readonly adminConfig: CaddyAdminConfig;
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
    private readonly binary = 'caddy',
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.socketPath = join(dir, 'admin.sock');
    // persist false: the database is the only source of the config
    this.adminConfig = { listen: `unix/${this.socketPath}`, config: { persist: false } };
  }

  /** The PID of the running Caddy, if any. */
  get pid(): number | undefined {
    return this.child?.exitCode === null ? this.child.pid : undefined;
  }

  start(): void {
    this.stopping = false;
    this.stopLeftover();
    rmSync(this.socketPath, { force: true });
    const configFile = join(this.dir, 'bootstrap.json');
    writeFileSync(configFile, JSON.stringify({ admin: this.adminConfig }));
    const log = openSync(join(this.dir, 'caddy.log'), 'a');
    // certificates, the internal CA and ACME accounts are kept under the data directory
    const env = { ...process.env, HOME: this.dir, XDG_DATA_HOME: join(this.dir, 'data'), XDG_CONFIG_HOME: join(this.dir, 'config') };
    // its own process group: Ctrl-C in the controller's terminal reaches the controller, which
    // then stops Caddy itself (instead of Caddy exiting first and being restarted meanwhile)
    const child = spawn(this.binary, ['run', '--config', configFile], { env, stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    this.child = child;
    if (child.pid) writeFileSync(this.pidFile, String(child.pid));
    child.once('error', (err) => this.logger.error(`caddy: ${err.message}`));
    child.once('exit', (code, signal) => {
      if (this.stopping) return;
      const delay = Math.min(30_000, 1000 * 2 ** Math.min(this.restarts++, 5));
      this.logger.warn(`caddy exited (${signal ?? `code ${code}`}); restarting in ${delay} ms (log: ${join(this.dir, 'caddy.log')})`);
      this.restartTimer = setTimeout(() => this.start(), delay);
      this.restartTimer.unref();
    });
    this.logger.info(`caddy started (pid ${child.pid}, admin on ${this.socketPath})`);
  }

  private get pidFile(): string {
    return join(this.dir, 'caddy.pid');
  }

  /**
   * A Caddy an earlier controller started here and left running (that controller was killed):
   * stopped by the PID it recorded, and only if that process is still Caddy run on this directory's config.
   */
  private stopLeftover(): void {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8'));
    } catch {
      return;
    }
    if (!Number.isInteger(pid) || pid <= 1 || pid === this.child?.pid) return;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return; // not running
    }
    if (!cmdline.includes(join(this.dir, 'bootstrap.json'))) return;
    this.logger.warn(`stopping the Caddy (pid ${pid}) an earlier controller left running in ${this.dir}`);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return; // gone meanwhile
    }
    // its ports and socket are free once it is gone (a killed process goes within milliseconds)
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) Atomics.wait(sleeper, 0, 0, 20);
  }

  /** Stops and starts Caddy (a fresh process: no listeners left from refused configs). */
  async restart(): Promise<void> {
    await this.stop();
    this.start();
  }

  /** SIGTERM by PID, SIGKILL after 5 s. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    rmSync(this.pidFile, { force: true });
  }
}
