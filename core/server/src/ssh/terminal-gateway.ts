/**
 * The web terminal at `/terminal`: a WebSocket that authenticates in its first message with a
 * ticket from `openTerminal` (never a token in the URL), then runs the real OpenSSH client under
 * node-pty, `ssh -J` through this controller's own jump server (with the internal key and a
 * one-time login bound to the ticket's user and instance), so password prompts, host-key messages
 * and full-screen programs behave as in a terminal. No shell is involved: `ssh` gets an argument
 * array and a config file this module writes.
 *
 * Protocol. Client → server: the first message is text, `{"type":"auth","ticket":"ght_…","cols":80,
 * "rows":24}`; then binary messages are keystrokes (bytes), text messages are control:
 * `{"type":"resize","cols":…,"rows":…}`, `{"type":"ping"}`. Server → client: text messages are
 * control (`ready`, `pong`, `hostKeyLearned`, `exit`, `error`), binary messages are terminal output,
 * each ending on a whole UTF-8 character. `ready` says `"recorded": true` when the session is
 * recorded (asciicast v2, `TerminalRecordingService`: the user's switch is on).
 *
 * The instance's host keys are learned on first use (`StrictHostKeyChecking accept-new` against a
 * known_hosts file written from the database) and stored; a changed key makes `ssh` refuse with its
 * warning.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { spawn as spawnPty, type IPty } from 'node-pty';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { SshAccessService, SshTarget } from '../services/ssh-access-service.js';
import type { TerminalService, InstanceSshHostKey } from '../services/terminal-service.js';
import type { TerminalRecordingService } from '../services/terminal-recording-service.js';
import type { AsciicastRecorder } from './asciicast.js';
import type { Logger } from '../support/logger.js';
import type { TunnelBroker } from '../tunnel/tunnel-broker.js';
import type { InternalLogins } from './internal-logins.js';

/** The path of the terminal WebSocket. */
export const TERMINAL_PATH = '/terminal';

/** Close codes of the terminal WebSocket (besides 1000 after the session ended). */
export const TERMINAL_CLOSE = {
  badRequest: 4400,
  badTicket: 4401,
  timeout: 4408,
  unavailable: 4503,
} as const;

/** Options of the gateway. */
export interface TerminalGatewayOptions {
  /** Where `ssh` reaches this controller's jump server, and its host key (`type base64`). */
  jump: { host: string; port: number; publicKey: string };
  /** Default `ssh` (found on PATH). */
  sshBinary?: string;
  /** Close a terminal after this long without input (default 30 min). */
  idleTimeoutMs?: number;
  /** The first message must come within this (default 10 s). */
  authTimeoutMs?: number;
  /** WebSocket pings (default every 20 s); a peer that misses two is cut. */
  pingIntervalMs?: number;
  /** Most terminals at once (default 64). */
  maxSessions?: number;
}

/** What the gateway uses. */
export interface TerminalGatewayDeps {
  terminals: TerminalService;
  access: SshAccessService;
  tunnels: TunnelBroker;
  logins: InternalLogins;
  logger: Logger;
  /** Recordings of the terminals of users an admin switched recording on for; absent: none. */
  recordings?: TerminalRecordingService;
}

/** Terminal size limits accepted from the browser. */
const MAX_COLS = 1000;
const MAX_ROWS = 500;
/** Output held for a slow browser before the pty is paused. */
const HIGH_WATER = 1 << 20;
/** Largest message accepted from the browser. */
const MAX_MESSAGE = 64 * 1024;

/** The length of the longest prefix of `chunk` that ends on a whole UTF-8 character. */
export function utf8CompletePrefix(chunk: Buffer): number {
  const end = chunk.length;
  // walk back over at most 3 continuation bytes to the start of the last character
  let start = end - 1;
  while (start >= 0 && end - start <= 3 && (chunk[start]! & 0xc0) === 0x80) start--;
  if (start < 0) return end;
  const lead = chunk[start]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return start + need > end ? start : end;
}

/** A size from the browser, clamped to what a terminal can be. */
function validSize(value: unknown, max: number, fallback: number): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 ? Math.min(value, max) : fallback;
}

/** Parses a text control message; undefined when it is not one. */
function controlOf(data: RawData, isBinary: boolean): Record<string, unknown> | undefined {
  if (isBinary) return undefined;
  try {
    const parsed = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(data as Buffer[]).toString('utf8')) as unknown;
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Serves `/terminal`. */
export class TerminalGateway {
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_MESSAGE });
  private readonly sessions = new Set<TerminalSession>();
  private readonly sockets = new Set<WebSocket>();
  private readonly runtimeDir: string;
  private readonly keyPath: string;
  private closed = false;

  constructor(
    private readonly deps: TerminalGatewayDeps,
    private readonly options: TerminalGatewayOptions,
  ) {
    // the internal key, for ssh only (0700 directory, 0600 file, gone when the controller stops)
    this.runtimeDir = mkdtempSync(join(tmpdir(), 'gatehouse-terminal-'));
    this.keyPath = join(this.runtimeDir, 'internal_key');
    writeFileSync(this.keyPath, deps.logins.privateKey, { mode: 0o600 });
    writeFileSync(join(this.runtimeDir, 'known_jump'), `${knownHostsName(options.jump.host, options.jump.port)} ${options.jump.publicKey}\n`, { mode: 0o600 });
  }

  /** Terminals running now. */
  get running(): number {
    return this.sessions.size;
  }

  /** Takes an HTTP upgrade on `/terminal`. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(request, socket, head, (ws) => this.accept(ws, request.socket.remoteAddress ?? 'unknown address'));
  }

  /** Ends every terminal (their ssh processes included) and removes the internal key. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.sessions].map((s) => s.end('the controller is stopping')));
    for (const ws of this.sockets) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    rmSync(this.runtimeDir, { recursive: true, force: true });
  }

  private accept(ws: WebSocket, from: string): void {
    this.sockets.add(ws);
    ws.once('close', () => this.sockets.delete(ws));
    const refuse = (code: number, errorCode: string, message: string) => {
      this.deps.logger.info(`terminal: refused ${from}: ${message}`);
      send(ws, { type: 'error', code: errorCode, message });
      ws.resume(); // to read the browser's answer to the close
      ws.close(code, errorCode);
    };
    const timer = setTimeout(
      () => refuse(TERMINAL_CLOSE.timeout, 'AUTH_TIMEOUT', `no authentication message within ${this.options.authTimeoutMs ?? 10_000} ms`),
      this.options.authTimeoutMs ?? 10_000,
    );
    ws.once('message', (data, isBinary) => {
      clearTimeout(timer);
      ws.pause(); // keystrokes typed before the terminal is ready wait
      void this.start(ws, from, controlOf(data, isBinary), refuse).catch((err: unknown) => {
        this.deps.logger.error(`terminal: starting for ${from} failed: ${(err as Error).message}`);
        refuse(TERMINAL_CLOSE.unavailable, 'INTERNAL', 'the terminal could not be started');
      });
    });
  }

  private async start(
    ws: WebSocket,
    from: string,
    hello: Record<string, unknown> | undefined,
    refuse: (code: number, errorCode: string, message: string) => void,
  ): Promise<void> {
    if (!hello || hello.type !== 'auth' || typeof hello.ticket !== 'string')
      return refuse(TERMINAL_CLOSE.badRequest, 'BAD_REQUEST', 'the first message must be {"type":"auth","ticket":"…","cols":N,"rows":N}');
    const grant = await this.deps.terminals.redeem(hello.ticket);
    if (!grant) return refuse(TERMINAL_CLOSE.badTicket, 'TICKET_INVALID', 'the ticket is unknown, already used or expired: ask for a new one (openTerminal)');
    if (this.closed) return refuse(TERMINAL_CLOSE.unavailable, 'UNAVAILABLE', 'the controller is stopping');
    if (this.sessions.size >= (this.options.maxSessions ?? 64))
      return refuse(TERMINAL_CLOSE.unavailable, 'UNAVAILABLE', `this controller runs ${this.sessions.size} terminals, its limit; try again later`);
    const instance = await this.deps.terminals.instanceOf(grant.instanceId);
    if (!instance) return refuse(TERMINAL_CLOSE.badTicket, 'TICKET_INVALID', 'the instance or the user of this ticket no longer exists');
    let target: SshTarget;
    try {
      target = await this.deps.access.resolveInstance(instance.id);
    } catch (err) {
      return refuse(TERMINAL_CLOSE.unavailable, 'UNREACHABLE', `instance ${instance.name}: ${(err as Error).message}`);
    }
    const ports = this.deps.tunnels.allowedPorts(target.hostId);
    if (!ports)
      return refuse(
        TERMINAL_CLOSE.unavailable,
        'UNREACHABLE',
        `instance ${instance.name} cannot be reached: the agent of host ${target.hostName} is not connected`,
      );
    if (!ports.includes(22))
      return refuse(
        TERMINAL_CLOSE.unavailable,
        'UNREACHABLE',
        `instance ${instance.name} cannot be reached: host ${target.hostName} does not allow SSH to port 22`,
      );
    const knownKeys = await this.deps.terminals.hostKeys(instance.id);
    const cols = validSize(hello.cols, MAX_COLS, 80);
    const rows = validSize(hello.rows, MAX_ROWS, 24);
    const recorder = await this.deps.recordings
      ?.recorderFor(
        { userId: grant.userId, userName: grant.userName, instanceId: instance.id, instanceName: instance.name, username: grant.username },
        { cols, rows },
      )
      .catch((err: unknown) => {
        this.deps.logger.error(`terminal: the recording for ${grant.userName} could not be started: ${(err as Error).message}`);
        return undefined;
      });
    const login = this.deps.logins.register({ userId: grant.userId, userName: grant.userName, target });
    let session: TerminalSession;
    try {
      session = new TerminalSession(ws, {
        deps: this.deps,
        options: this.options,
        runtimeDir: this.runtimeDir,
        keyPath: this.keyPath,
        login,
        target,
        username: grant.username,
        knownKeys,
        cols,
        rows,
        from,
        recorder,
      });
    } catch (err) {
      // ssh could not start (pty, runtime files): nothing may stay open or registered for it
      this.deps.logins.forget(login);
      await recorder?.close();
      throw err;
    }
    this.sessions.add(session);
    void session.done.then(() => this.sessions.delete(session));
    send(ws, {
      type: 'ready',
      instance: { id: instance.id, name: instance.name, address: target.address },
      username: grant.username,
      hostKeys: knownKeys.map((k) => ({ algorithm: k.algorithm, fingerprint: k.fingerprint })),
      recorded: recorder !== undefined,
    });
    ws.resume();
    this.deps.logger.info(`terminal: ${grant.userName} from ${from} to ${grant.username}@${instance.name} (${target.address})`);
  }
}

/** How known_hosts names a host on a port. */
function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function send(ws: WebSocket, message: Record<string, unknown>): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

interface SessionSetup {
  deps: TerminalGatewayDeps;
  options: TerminalGatewayOptions;
  runtimeDir: string;
  keyPath: string;
  login: string;
  target: SshTarget;
  username: string;
  knownKeys: InstanceSshHostKey[];
  cols: number;
  rows: number;
  from: string;
  /** Where the session is recorded, when it is. */
  recorder?: AsciicastRecorder;
}

/** One terminal: its WebSocket, its ssh under a pty, its files. */
class TerminalSession {
  /** Resolves when ssh has exited and the files are gone. */
  readonly done: Promise<void>;
  private readonly pty: IPty;
  private readonly dir: string;
  private readonly alias: string;
  private carry: Buffer = Buffer.alloc(0);
  /** The start of a character whose last bytes have not come from the browser yet. */
  private inputCarry: Buffer = Buffer.alloc(0);
  private idle?: NodeJS.Timeout;
  private ping?: NodeJS.Timeout;
  private learn?: NodeJS.Timeout;
  private alive = true;
  private paused = false;
  private exited = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly setup: SessionSetup,
  ) {
    this.dir = mkdtempSync(join(setup.runtimeDir, 'session-'));
    // the name ssh shows in its prompts and messages; the file holds this instance's keys only
    this.alias = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(setup.target.instanceName) ? setup.target.instanceName : `instance-${setup.target.instanceId}`;
    const knownInstance = join(this.dir, 'known_instance');
    writeFileSync(knownInstance, setup.knownKeys.map((k) => `${this.alias} ${k.publicKey}\n`).join(''), { mode: 0o600 });
    const config = join(this.dir, 'config');
    writeFileSync(config, sshConfig(setup, this.alias, knownInstance), { mode: 0o600 });
    try {
      this.pty = spawnPty(setup.options.sshBinary ?? 'ssh', ['-F', config, '-J', 'gatehouse-jump', '-l', setup.username, '--', 'gatehouse-instance'], {
        name: 'xterm-256color',
        cols: setup.cols,
        rows: setup.rows,
        cwd: this.dir,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color', HOME: this.dir, LANG: 'C.UTF-8' },
        encoding: null,
      });
    } catch (err) {
      rmSync(this.dir, { recursive: true, force: true });
      throw err;
    }
    this.done = new Promise((resolve) => {
      this.pty.onExit(({ exitCode, signal }) => {
        this.exited = true;
        void this.finish(exitCode, signal).finally(resolve);
      });
    });
    this.pty.onData((data) => this.output(data as unknown as Buffer));
    ws.on('message', (data, isBinary) => this.input(data, isBinary));
    ws.on('pong', () => (this.alive = true));
    ws.once('close', () => void this.end('the browser closed the terminal'));
    this.touch();
    const pingMs = setup.options.pingIntervalMs ?? 20_000;
    this.ping = setInterval(() => {
      if (!this.alive) return void this.end('the browser stopped answering pings');
      this.alive = false;
      ws.ping();
    }, pingMs);
    if (setup.knownKeys.length === 0) this.learn = setInterval(() => void this.learnKeys(knownInstance), 250);
  }

  /** Ends the terminal: hangs up ssh (then kills its process group if it lingers) and waits for it. */
  async end(why: string): Promise<void> {
    if (!this.exited) {
      this.setup.deps.logger.info(`terminal: ending ${this.setup.username}@${this.setup.target.instanceName}: ${why}`);
      this.signal('SIGHUP');
      const kill = setTimeout(() => this.signal('SIGKILL'), 3000);
      await this.done;
      clearTimeout(kill);
    }
    await this.done;
  }

  private signal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pty.pid, signal); // ssh and its ProxyJump child
    } catch {
      // already gone
    }
  }

  private output(data: Buffer): void {
    const chunk = this.carry.length > 0 ? Buffer.concat([this.carry, data]) : data;
    const cut = utf8CompletePrefix(chunk);
    this.carry = chunk.subarray(cut);
    if (cut === 0) return;
    this.setup.recorder?.output(chunk.subarray(0, cut));
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(chunk.subarray(0, cut), { binary: true });
    if (!this.paused && this.ws.bufferedAmount > HIGH_WATER) {
      this.paused = true;
      this.pty.pause();
      const wait = setInterval(() => {
        if (this.ws.bufferedAmount > HIGH_WATER / 4 && this.ws.readyState === this.ws.OPEN) return;
        clearInterval(wait);
        this.paused = false;
        this.pty.resume();
      }, 10);
    }
  }

  private input(data: RawData, isBinary: boolean): void {
    if (this.exited) return;
    if (isBinary) {
      this.touch();
      // keystrokes reach the pty as whole characters: a character split across two messages is
      // held back until its last byte comes (a shell's line editor seeing half of one can misplace it)
      const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
      const chunk = this.inputCarry.length > 0 ? Buffer.concat([this.inputCarry, bytes]) : bytes;
      const whole = utf8CompletePrefix(chunk);
      this.inputCarry = Buffer.from(chunk.subarray(whole));
      if (whole > 0) this.pty.write(chunk.subarray(0, whole));
      return;
    }
    const control = controlOf(data, false);
    if (control?.type === 'ping') return send(this.ws, { type: 'pong' });
    if (control?.type === 'resize') {
      this.touch();
      const cols = validSize(control.cols, MAX_COLS, this.pty.cols);
      const rows = validSize(control.rows, MAX_ROWS, this.pty.rows);
      this.pty.resize(cols, rows);
      this.setup.recorder?.resize(cols, rows);
      return;
    }
    send(this.ws, { type: 'error', code: 'BAD_REQUEST', message: 'unknown control message: expected {"type":"resize",…} or {"type":"ping"}' });
  }

  private touch(): void {
    clearTimeout(this.idle);
    const idleMs = this.setup.options.idleTimeoutMs ?? 30 * 60_000;
    this.idle = setTimeout(() => {
      send(this.ws, { type: 'error', code: 'IDLE', message: `no input for ${Math.round(idleMs / 1000)} s: the terminal was closed` });
      void this.end('idle');
    }, idleMs);
  }

  /** Stores the key `ssh` accepted on first use, once it is in the session's known_hosts file. */
  private async learnKeys(knownInstance: string): Promise<void> {
    const lines = existsSync(knownInstance)
      ? readFileSync(knownInstance, 'utf8')
          .split('\n')
          .filter((l) => l.startsWith(`${this.alias} `))
          .map((l) => l.slice(this.alias.length + 1))
      : [];
    if (lines.length === 0) return;
    clearInterval(this.learn);
    this.learn = undefined;
    const stored = await this.setup.deps.terminals.learnHostKeys(this.setup.target.instanceId, lines);
    send(this.ws, { type: 'hostKeyLearned', hostKeys: stored.map((k) => ({ algorithm: k.algorithm, fingerprint: k.fingerprint })) });
  }

  private async finish(exitCode: number, signal: number | undefined): Promise<void> {
    clearTimeout(this.idle);
    clearInterval(this.ping);
    if (this.learn) {
      clearInterval(this.learn);
      await this.learnKeys(join(this.dir, 'known_instance')).catch((err: unknown) =>
        this.setup.deps.logger.error(`terminal: storing the host key of ${this.setup.target.instanceName} failed: ${(err as Error).message}`),
      );
    }
    this.setup.deps.logins.forget(this.setup.login);
    if (this.carry.length > 0) {
      this.setup.recorder?.output(this.carry);
      if (this.ws.readyState === this.ws.OPEN) this.ws.send(this.carry, { binary: true });
    }
    await this.setup.recorder?.close();
    const message =
      exitCode === 0
        ? 'the session ended'
        : exitCode === 255
          ? 'ssh could not connect to the instance or lost the connection (its message is above)'
          : signal
            ? `ssh ended on signal ${signal}`
            : `the session ended with exit code ${exitCode}`;
    send(this.ws, { type: 'exit', code: exitCode, message });
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000, 'ended');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The session's ssh config: the jump server with the internal key, the instance through it (no key offered, host key learned on first use). */
function sshConfig(setup: SessionSetup, alias: string, knownInstance: string): string {
  const { jump } = setup.options;
  const common = [
    'IdentityAgent none',
    'GlobalKnownHostsFile /dev/null',
    'ForwardAgent no',
    'ForwardX11 no',
    'ClearAllForwardings yes',
    'PermitLocalCommand no',
  ];
  return [
    'Host gatehouse-jump',
    `  HostName ${jump.host}`,
    `  Port ${jump.port}`,
    `  User ${setup.login}`,
    `  IdentityFile ${setup.keyPath}`,
    '  IdentitiesOnly yes',
    '  BatchMode yes',
    '  StrictHostKeyChecking yes',
    `  UserKnownHostsFile ${join(setup.runtimeDir, 'known_jump')}`,
    ...common.map((l) => `  ${l}`),
    'Host gatehouse-instance',
    `  HostName ${setup.target.address}`,
    '  Port 22',
    `  HostKeyAlias ${alias}`,
    `  UserKnownHostsFile ${knownInstance}`,
    '  StrictHostKeyChecking accept-new',
    '  UpdateHostKeys no',
    '  HashKnownHosts no',
    '  PubkeyAuthentication no',
    '  ServerAliveInterval 15',
    '  ServerAliveCountMax 4',
    '  ConnectTimeout 20',
    ...common.map((l) => `  ${l}`),
    '',
  ].join('\n');
}
