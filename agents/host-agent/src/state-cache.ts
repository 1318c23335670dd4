/**
 * The host's last-known-good desired state on disk, so the data plane survives a reboot or an
 * agent restart while the controller is unreachable: the agent stores every document it applied
 * and, on start, applies the stored one before (and regardless of) connecting.
 *
 * One file, `desired-state.json`, in the agent's state directory (0700), readable by root only
 * (0600): `{ format, hostId, revision, savedAt, checksum, desired }`, the checksum being the
 * SHA-256 of `desired` as serialised. It is written atomically (a temporary file in the same
 * directory, fsync, rename over the old one, fsync of the directory), so a crash or power cut
 * leaves the old file or the new one, never a mix. A file that does not parse, has an unknown
 * format, a checksum that does not match, another host's id or a document that does not validate
 * is refused whole: nothing of it is applied.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { markValid, validateDesiredState, type DesiredState } from '@gatehouse/sdk';

/** The format of the cache file this agent writes and reads; another one is refused. */
export const STATE_CACHE_FORMAT = 1;
/** Where the agent keeps its state when `--state-dir` is not given. */
export const DEFAULT_STATE_DIR = '/var/lib/gatehouse-agent';
/** The cache file's name inside the state directory. */
export const STATE_CACHE_FILE = 'desired-state.json';

const TEMP_PREFIX = `.${STATE_CACHE_FILE}.`;
const TEMP_SUFFIX = '.tmp';

/** The cache file as stored. */
interface CacheFile {
  format: number;
  hostId: string;
  revision: number;
  savedAt: string;
  checksum: string;
  desired: DesiredState;
}

/** A cached document that passed every check. */
export interface CachedState {
  hostId: string;
  revision: number;
  savedAt: string;
  desired: DesiredState;
}

/** The cache file exists but is refused (corrupt, foreign, unknown format); `reason` says why. */
export class StateCacheRefusedError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`refused the cached desired state ${path}: ${reason}; nothing of it is applied, waiting for the controller`);
    this.name = 'StateCacheRefusedError';
  }
}

function checksumOf(serialised: string): string {
  return `sha256:${createHash('sha256').update(serialised).digest('hex')}`;
}

/** Forwards serialised in one piece (a few milliseconds of work). */
const SLICE = 2_000;

/** `JSON.stringify(o)` in pieces, with the members named in `expand` given in pieces by their function. */
function* objectPieces(o: object, expand: Record<string, (member: never) => Generator<string>>): Generator<string> {
  let first = true;
  for (const [key, member] of Object.entries(o)) {
    // as JSON.stringify: a member without a JSON form is left out
    if (member === undefined || typeof member === 'function' || typeof member === 'symbol') continue;
    const head = `${first ? '{' : ','}${JSON.stringify(key)}:`;
    first = false;
    const pieces = Object.hasOwn(expand, key) && Array.isArray(member) ? expand[key]!(member as never) : undefined;
    if (pieces) {
      yield head;
      yield* pieces;
    } else {
      yield `${head}${JSON.stringify(member)}`;
    }
  }
  yield first ? '{}' : '}';
}

/** A list in pieces: `each` gives the pieces of one item. */
function* listPieces<T>(items: readonly T[], each: (item: T) => Generator<string>): Generator<string> {
  yield '[';
  for (let i = 0; i < items.length; i++) {
    if (i > 0) yield ',';
    yield* each(items[i]!);
  }
  yield ']';
}

/** Forwards SLICE at a time. */
function* forwardPieces(forwards: readonly unknown[]): Generator<string> {
  if (forwards.length === 0) yield '[]';
  for (let i = 0; i < forwards.length; i += SLICE) {
    const part = JSON.stringify(forwards.slice(i, i + SLICE));
    yield `${i === 0 ? '[' : ','}${part.slice(1, -1)}${i + SLICE >= forwards.length ? ']' : ''}`;
  }
}

/**
 * `JSON.stringify(desired)` in pieces (joined, exactly that string) of at most SLICE forwards
 * each, so that a writer can let other work run between them.
 */
export function* documentPieces(desired: DesiredState): Generator<string> {
  const instance = (i: object) => objectPieces(i, { portForwards: forwardPieces });
  yield* objectPieces(desired, { instances: (instances: object[]) => listPieces(instances, instance) });
}

/** How much serialised text the cache produces between two turns of the event loop. */
const CHARS_PER_TURN = 256 * 1024;

/** What a StateCache does besides its directory (tests). */
export interface StateCacheOptions {
  /** Lets other work run while a document is serialised (default: one turn of the event loop). */
  pause?: () => Promise<unknown>;
}

/** The last applied desired state of one host, in a state directory. */
export class StateCache {
  /** Checksum of what the file holds (after a save or a load), so an unchanged document is not written again. */
  private stored: string | undefined;

  private readonly pause: () => Promise<unknown>;

  constructor(
    readonly dir: string,
    options: StateCacheOptions = {},
  ) {
    this.pause = options.pause ?? (() => turn());
  }

  /** The cache file's path. */
  get path(): string {
    return join(this.dir, STATE_CACHE_FILE);
  }

  /**
   * Stores `desired` atomically (temp file, fsync, rename, directory fsync), mode 0600 in a 0700
   * directory; returns false when the file already holds this very document. The document is
   * serialised and hashed a slice at a time with turns of the event loop between (at 250,000
   * forwards the whole is about a second of work, which a change arriving meanwhile would wait
   * for); it must not change until the returned promise settles (documents are never changed).
   */
  async save(desired: DesiredState): Promise<boolean> {
    const pieces: string[] = [];
    const hash = createHash('sha256');
    let sinceTurn = 0;
    for (const piece of documentPieces(desired)) {
      pieces.push(piece);
      hash.update(piece);
      sinceTurn += piece.length;
      if (sinceTurn >= CHARS_PER_TURN) {
        sinceTurn = 0;
        await this.pause();
      }
    }
    const checksum = `sha256:${hash.digest('hex')}`;
    if (checksum === this.stored) return false;
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const header = { format: STATE_CACHE_FORMAT, hostId: desired.hostId, revision: desired.revision, savedAt: new Date().toISOString(), checksum };
    // the document goes in as serialised for the checksum, in writes of about CHARS_PER_TURN
    const text = function* (): Generator<string> {
      let batch = `${JSON.stringify(header).slice(0, -1)},"desired":`;
      for (const piece of pieces) {
        batch += piece;
        if (batch.length >= CHARS_PER_TURN) {
          yield batch;
          batch = '';
        }
      }
      yield `${batch}}\n`;
    };
    const temp = join(this.dir, `${TEMP_PREFIX}${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
    const file = await open(temp, 'wx', 0o600);
    try {
      for (const batch of text()) {
        const bytes = Buffer.from(batch);
        for (let at = 0; at < bytes.length;) at += (await file.write(bytes, at)).bytesWritten;
      }
      await file.sync();
    } catch (err) {
      await file.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await file.close();
    try {
      await rename(temp, this.path);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    // the rename itself is durable once the directory is synced
    const directory = await open(this.dir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    this.stored = checksum;
    return true;
  }

  /**
   * Reads the cache: null when there is none; the document when every check passes (format,
   * checksum, `expectedHostId` when given, the document's own validity); otherwise throws
   * `StateCacheRefusedError`. Temporary files a crash left behind are removed.
   */
  async load(expectedHostId?: string): Promise<CachedState | null> {
    await this.removeLeftovers();
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new StateCacheRefusedError(this.path, `cannot be read (${(err as Error).message})`);
    }
    const refuse = (reason: string): never => {
      throw new StateCacheRefusedError(this.path, reason);
    };
    let file: CacheFile;
    try {
      file = JSON.parse(text) as CacheFile;
    } catch (err) {
      return refuse(`is not JSON (${(err as Error).message}): the file is corrupt`);
    }
    if (typeof file !== 'object' || file === null || Array.isArray(file)) return refuse('is not a JSON object: the file is corrupt');
    if (file.format !== STATE_CACHE_FORMAT) return refuse(`has format ${JSON.stringify(file.format)}, this agent reads format ${STATE_CACHE_FORMAT} only`);
    if (typeof file.checksum !== 'string' || file.desired === undefined) return refuse('has no checksum or no document: the file is corrupt');
    const serialised = JSON.stringify(file.desired);
    const actual = checksumOf(serialised);
    if (actual !== file.checksum) return refuse(`has checksum ${actual}, its header says ${file.checksum}: the file is corrupt`);
    let desired: DesiredState;
    try {
      desired = validateDesiredState(file.desired, 'cache.desired');
    } catch (err) {
      return refuse(`holds an invalid document: ${(err as Error).message}`);
    }
    if (desired.hostId !== file.hostId || desired.revision !== file.revision)
      return refuse(
        `header (host ${file.hostId}, revision ${file.revision}) does not match its document (host ${desired.hostId}, revision ${desired.revision})`,
      );
    if (expectedHostId !== undefined && desired.hostId !== expectedHostId)
      return refuse(`is for host ${desired.hostId}, this agent manages host ${expectedHostId}`);
    this.stored = actual;
    markValid(desired); // checked: the driver's apply trusts it
    return { hostId: desired.hostId, revision: desired.revision, savedAt: String(file.savedAt), desired };
  }

  /** Removes temporary files of writes that never reached their rename (a crash, a power cut). */
  private async removeLeftovers(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      // a write of this very process may be under way; the pid in the name tells
      if (name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX) && !name.startsWith(`${TEMP_PREFIX}${process.pid}.`))
        await unlink(join(this.dir, name)).catch(() => undefined);
    }
  }
}
