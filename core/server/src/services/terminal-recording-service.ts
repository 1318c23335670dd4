/**
 * Recordings of web terminals (asciicast v2), off by default: an admin switches them on per user
 * (`setTerminalRecording`, audited). The files are `<dir>/<userId>/<recordingId>.cast` (directories
 * 0700, files 0600) in this controller's recordings directory, each capped at `maxBytes`. The
 * user and admins list and read them; a recording lives on the controller that ran its terminal.
 */
import { mkdirSync, openSync, readSync, closeSync, readdirSync, statSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { users } from '../db/schema.js';
import { DatabaseToken } from '../di/tokens.js';
import { AsciicastRecorder, type AsciicastHeader, type RecordingSubject } from '../ssh/asciicast.js';
import { NotFoundError, ValidationError } from '../support/errors.js';
import { isId, newId } from '../support/ids.js';
import { validId } from '../support/validate.js';
import { AuditService } from './audit-service.js';
import { auditedUser, requireAdmin, type User } from './user-service.js';

/** Default cap of one recording: 16 MiB. */
export const DEFAULT_RECORDING_MAX_BYTES = 16 << 20;
/** The largest header line read back. */
const MAX_HEADER = 8192;

/** Where and how big; set when the controller starts its web terminal. */
export interface RecordingSettings {
  dir: string;
  /** Most bytes of one recording (default 16 MiB). */
  maxBytes?: number;
}

/** A stored recording, as listed. */
export interface TerminalRecording {
  id: string;
  userId: string;
  instanceId: string;
  instanceName: string;
  username: string;
  startedAt: Date;
  /** The file's last write. */
  updatedAt: Date;
  bytes: number;
  width: number;
  height: number;
}

@injectable()
export class TerminalRecordingService {
  /** Absent: this controller records nothing (no web terminal, or no directory). */
  settings?: RecordingSettings;

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Switches recording of a user's web terminals (admin only); audited. */
  async setRecording(actor: Actor, input: { userId: string; enabled: boolean }): Promise<User> {
    requireAdmin(actor, 'setTerminalRecording');
    const id = validId('input.userId', input.userId);
    if (typeof input.enabled !== 'boolean') throw new ValidationError('input.enabled', input.enabled, 'must be true or false');
    return this.audit.transact(actor, async (tx, record) => {
      const [before] = await tx.select().from(users).where(eq(users.id, id)).for('update');
      if (!before) throw new NotFoundError('input.userId', id, 'user');
      if (before.terminalRecording === input.enabled) return before;
      const [after] = await tx.update(users).set({ terminalRecording: input.enabled }).where(eq(users.id, id)).returning();
      await record({
        action: 'user.setTerminalRecording',
        objectType: 'User',
        objectId: id,
        ownerId: id,
        before: auditedUser(before),
        after: auditedUser(after!),
      });
      return after!;
    });
  }

  /**
   * A recorder for a new terminal of `subject.userId`, when that user's terminals are recorded and
   * this controller has a recordings directory; undefined otherwise (nothing is written).
   */
  async recorderFor(subject: Omit<RecordingSubject, 'id'>, size: { cols: number; rows: number }): Promise<AsciicastRecorder | undefined> {
    if (!this.settings) return undefined;
    const [user] = await this.db.select({ on: users.terminalRecording }).from(users).where(eq(users.id, subject.userId));
    if (!user?.on) return undefined;
    const dir = join(this.settings.dir, subject.userId);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const id = newId();
    return new AsciicastRecorder(join(dir, `${id}.cast`), { id, ...subject }, size, this.settings.maxBytes ?? DEFAULT_RECORDING_MAX_BYTES);
  }

  /** A user's recordings, newest first (the user themself, or an admin; others see none). */
  list(actor: Actor, userId: string, limit: number): TerminalRecording[] {
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new ValidationError('last', limit, 'must be 1-500');
    if (!isAdmin(actor) && actor.userId !== userId) return [];
    if (!this.settings || !isId(userId)) return [];
    const dir = join(this.settings.dir, userId);
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((name) => name.endsWith('.cast') && isId(name.slice(0, -5)))
      .flatMap((name) => {
        const found = readRecording(join(dir, name), userId, name.slice(0, -5));
        return found ? [found] : [];
      })
      .sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime() || (a.id < b.id ? 1 : -1))
      .slice(0, limit);
  }

  /** One recording (its owner, or an admin); undefined when there is none the actor may see. */
  get(actor: Actor, recordingId: string): TerminalRecording | undefined {
    const id = validId('id', recordingId);
    if (!this.settings || !existsSync(this.settings.dir)) return undefined;
    const owners = isAdmin(actor) ? readdirSync(this.settings.dir).filter(isId) : [actor.userId];
    for (const owner of owners) {
      const path = join(this.settings.dir, owner, `${id}.cast`);
      if (existsSync(path)) return readRecording(path, owner, id);
    }
    return undefined;
  }

  /** The asciicast text of a recording the actor may see (`get` first). */
  async content(actor: Actor, recording: TerminalRecording): Promise<string> {
    if (!isAdmin(actor) && actor.userId !== recording.userId) throw new NotFoundError('id', recording.id, 'terminal recording');
    return readFile(join(this.settings!.dir, recording.userId, `${recording.id}.cast`), 'utf8');
  }
}

/** A recording's listing from its header line and the file's size; undefined when it is not one of ours. */
function readRecording(path: string, userId: string, id: string): TerminalRecording | undefined {
  let header: AsciicastHeader;
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(MAX_HEADER);
    const n = readSync(fd, buffer, 0, MAX_HEADER, 0);
    const end = buffer.subarray(0, n).indexOf(10);
    if (end < 0) return undefined;
    header = JSON.parse(buffer.subarray(0, end).toString('utf8')) as AsciicastHeader;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
  const g = header.gatehouse;
  if (header.version !== 2 || !g || g.userId !== userId || g.id !== id) return undefined;
  const stat = statSync(path);
  return {
    id,
    userId,
    instanceId: g.instanceId,
    instanceName: g.instanceName,
    username: g.username,
    startedAt: new Date(header.timestamp * 1000),
    updatedAt: stat.mtime,
    bytes: stat.size,
    width: header.width,
    height: header.height,
  };
}
