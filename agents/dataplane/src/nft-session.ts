/**
 * A long-lived `nft -j -i` for small transactions: starting a process (`ip netns exec`, `env`, nft
 * with its libraries) cost 21-45 ms per change here, more than the transaction of one forward.
 *
 * nft's interactive mode runs each input line as one batch, as `nft -j -f` runs a file: a line is
 * one atomic transaction (a failing last command leaves nothing of the line applied). It reports
 * nothing on success and prints errors on stderr, then reads the next line. After each
 * transaction the session sends a sentinel: a line nft cannot parse, whose error (the line echoed
 * between "Error: syntax error" and a marker line) ends what belongs to the transaction on stderr.
 *
 * nft reads its input through libedit one byte per read(2), converting each byte to a wide
 * character (about 1.2 µs per byte here: a 12 KB line took 15-19 ms, as long as `nft -j -f`), so
 * only transactions of a few KiB go through the session; bigger ones (a whole table) keep the
 * one-shot `nft -j -f FILE` of `applyNft`. libedit
 * drops bytes outside ASCII in the C locale: the JSON is sent with `\u` escapes only. It also keeps
 * every line in its history (memory of the process): the process is replaced after some MiB of
 * transactions, and its history file goes nowhere (HOME=/nonexistent).
 *
 * Anything unexpected (the process gone, no sentinel within the time limit, output of another
 * shape) ends the process (by its PID) and the transaction goes through `applyNft` instead, so it
 * is never lost; the next transaction starts a new process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { ExecTarget } from '@gatehouse/sdk';
import { NFT_MALLOC_TUNABLES, NftError, applyNft, type NftCommand } from './nft.js';

/** Limits of a session. */
export interface NftSessionOptions {
  /** Transactions whose JSON is longer go through `nft -j -f` (the session reads about 1.2 µs per byte). Default 8 KiB. */
  maxLineBytes?: number;
  /** Time for one transaction before the process is ended and the transaction goes through `nft -j -f`. Default 30 s. */
  timeoutMs?: number;
  /**
   * Bytes of transactions after which the process is replaced: libedit keeps every line in its
   * history (its RSS grew 12 MiB over 11.6 MiB of lines). Default 4 MiB.
   */
  recycleBytes?: number;
}

/** How a session's transactions went, for benches and tests. */
export interface NftSessionStats {
  /** Processes started. */
  started: number;
  /** Transactions nft answered through the session (applied or refused). */
  viaSession: number;
  /** Transactions sent to `nft -j -f` for their size, or after `close`. */
  oneShot: number;
  /** Transactions sent to `nft -j -f` after the session failed them (process gone, time out, unknown output). */
  fallbacks: number;
  /** The last failure of the session, in words. */
  lastFailure?: string;
}

/** The session's own failure (not nft's refusal): the transaction goes through `nft -j -f`. */
class SessionFailure extends Error {}

const DEFAULTS: Required<NftSessionOptions> = { maxLineBytes: 8 * 1024, timeoutMs: 30_000, recycleBytes: 4 * 1024 * 1024 };

/**
 * Sends nft transactions of one target (host or namespace) through one long-lived `nft -j -i`,
 * one at a time and in the order `apply` was called. Same contract as `applyNft`: resolves when
 * the transaction is applied, throws `NftError` (nothing applied) when nft refused it.
 */
export class NftSession {
  private live: NftProcess | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private sequence = 0;
  private readonly options: Required<NftSessionOptions>;
  readonly stats: NftSessionStats = { started: 0, viaSession: 0, oneShot: 0, fallbacks: 0 };

  constructor(
    readonly target: ExecTarget = {},
    options: NftSessionOptions = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  /** The PID of the running nft process, if one runs. */
  get pid(): number | undefined {
    return this.live?.alive ? this.live.child.pid : undefined;
  }

  /** Applies commands as one atomic transaction, after every transaction applied before it. */
  apply(commands: readonly NftCommand[]): Promise<void> {
    const done = this.tail.then(() => this.applyNow(commands));
    this.tail = done.catch(() => undefined);
    return done;
  }

  /**
   * Ends the process after the transactions already queued; succeeds when none runs. Later
   * transactions go through `nft -j -f` (no process is left behind a closed session).
   */
  close(): Promise<void> {
    this.closed = true;
    const done = this.tail.then(() => this.retire());
    this.tail = done.catch(() => undefined);
    return done;
  }

  private async applyNow(commands: readonly NftCommand[]): Promise<void> {
    if (commands.length === 0) return;
    const line = asciiJson({ nftables: commands });
    if (this.closed || line.length > this.options.maxLineBytes) {
      this.stats.oneShot++;
      return applyNft(commands, this.target);
    }
    let errors: string;
    try {
      if (!this.live?.alive) {
        this.live = new NftProcess(this.target);
        this.stats.started++;
      }
      errors = await this.live.transact(line, `gatehouse-sync-${++this.sequence}`, this.options.timeoutMs);
    } catch (err) {
      // whether nft applied it is unknown: the one-shot path applies it (again; element adds and
      // flushed-and-refilled chains come out the same, a repeated delete is refused and the
      // dataplane then replaces the table)
      this.stats.fallbacks++;
      this.stats.lastFailure = (err as Error).message;
      this.live?.fail(new SessionFailure(`nft -i dropped: ${(err as Error).message}`));
      this.live = undefined;
      return applyNft(commands, this.target);
    }
    this.stats.viaSession++;
    if (this.live.bytes >= this.options.recycleBytes) await this.retire();
    if (errors.includes('Error:')) throw new NftError(errors);
  }

  private async retire(): Promise<void> {
    const live = this.live;
    this.live = undefined;
    await live?.end();
  }
}

/** JSON with every character outside printable ASCII escaped (`\u00e9`): libedit drops such bytes. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One `nft -j -i` process and the stderr it printed. */
class NftProcess {
  readonly child: ChildProcess;
  /** Bytes of transaction lines sent. */
  bytes = 0;
  private stderr = '';
  private failure: Error | undefined;
  private waiting: { token: string; resolve: (errors: string) => void; reject: (err: Error) => void } | undefined;
  private readonly exited: Promise<void>;

  constructor(target: ExecTarget) {
    const nft = ['nft', '-j', '-i'];
    const [command, args] = target.netns ? ['ip', ['netns', 'exec', target.netns, ...nft]] : ['nft', nft.slice(1)];
    // the same allocator settings as a one-shot transaction; HOME: libedit's history file (every
    // line sent) is read and written in none of root's directories
    const env = { ...process.env, GLIBC_TUNABLES: NFT_MALLOC_TUNABLES, HOME: '/nonexistent' };
    this.child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'], env });
    this.exited = new Promise((resolve) => this.child.once('close', () => resolve()));
    this.child.once('error', (err) => this.fail(new SessionFailure(`nft -i could not start: ${err.message}`)));
    this.child.once('exit', (code, signal) => this.fail(new SessionFailure(`nft -i ended (${signal ?? `exit ${code}`}): ${this.stderr.trim()}`)));
    this.child.stdin!.on('error', (err) => this.fail(new SessionFailure(`writing to nft -i failed: ${err.message}`)));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.settle();
    });
    // an idle session keeps no process of ours running (the pipes close with it, and nft ends at
    // the end of its input); a transaction under way keeps its timer
    this.child.unref();
    for (const stream of [this.child.stdin, this.child.stderr]) (stream as unknown as { unref?: () => void }).unref?.();
  }

  get alive(): boolean {
    return this.failure === undefined;
  }

  /** Sends one transaction line and its sentinel; resolves with what nft printed for the transaction (nothing: applied). */
  transact(line: string, token: string, timeoutMs: number): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiting) return Promise.reject(new SessionFailure('nft -i is busy'));
    this.bytes += line.length;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new SessionFailure(`nft -i gave no answer in ${timeoutMs} ms`)), timeoutMs);
      this.waiting = {
        token,
        resolve: (errors) => (clearTimeout(timer), resolve(errors)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      };
      this.child.stdin!.write(`${line}\n${token}\n`);
    });
  }

  /**
   * Ends a transaction once its sentinel's error is complete on stderr: a line "Error: ...",
   * the sentinel's own line, and the marker line under it. What precedes is the transaction's.
   */
  private settle(): void {
    const waiting = this.waiting;
    if (!waiting) {
      if (this.stderr.trim() !== '') this.fail(new SessionFailure(`nft -i printed outside a transaction: ${this.stderr.trim()}`));
      return;
    }
    const at = this.stderr.indexOf(`\n${waiting.token}\n`);
    if (at < 0) return;
    const markerEnd = this.stderr.indexOf('\n', at + waiting.token.length + 2);
    if (markerEnd < 0) return;
    const before = this.stderr.slice(0, at);
    const errorLine = before.lastIndexOf('\n') + 1;
    const marker = this.stderr.slice(at + waiting.token.length + 2, markerEnd);
    this.stderr = this.stderr.slice(markerEnd + 1);
    if (!before.startsWith('Error: ', errorLine) || !/^\s*\^[\^~]*\s*$/.test(marker)) {
      this.fail(new SessionFailure(`nft -i answered the sentinel unexpectedly: ${JSON.stringify(before.slice(errorLine) + marker)}`));
      return;
    }
    this.waiting = undefined;
    waiting.resolve(before.slice(0, errorLine));
  }

  /** Marks the process failed (rejecting the transaction under way) and ends it at once (SIGKILL to its PID). */
  fail(err: Error): void {
    this.failure ??= err;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.reject(this.failure);
    if (this.running) this.child.kill('SIGKILL');
  }

  private get running(): boolean {
    return this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Ends the input (nft exits at its end) and waits for the process; SIGKILL after 2 s. */
  async end(): Promise<void> {
    this.failure ??= new SessionFailure('nft -i closed');
    if (!this.running) return;
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2_000);
    this.child.stdin!.end();
    await this.exited;
    clearTimeout(timer);
  }
}
