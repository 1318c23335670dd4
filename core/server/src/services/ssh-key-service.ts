/**
 * Users' SSH public keys, which the controller's jump server accepts (public-key authentication
 * only). A key belongs to one user: its SHA-256 fingerprint is unique.
 */
import { createHash } from 'node:crypto';
import { and, asc, eq } from 'drizzle-orm';
import ssh2 from 'ssh2';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { sshKeys, users } from '../db/schema.js';
import { DatabaseToken } from '../di/tokens.js';
import { ConflictError, NotFoundError, ValidationError } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { validId, validName } from '../support/validate.js';
import { AuditService } from './audit-service.js';

/** A stored SSH public key. */
export type SshKey = typeof sshKeys.$inferSelect;

/** Input of `addSshKey`. */
export interface AddSshKeyInput {
  /** One line as in `authorized_keys` or `id_ed25519.pub`: `type base64 [comment]`. */
  publicKey: string;
  /** Default: the key's comment, else its type. */
  name?: string | null;
}

/** Longest public key line accepted (an RSA 16384-bit key is about 2,800 characters). */
export const MAX_PUBLIC_KEY_CHARS = 8192;
/** Most keys one user may have. */
export const MAX_SSH_KEYS_PER_USER = 100;
/** Key types accepted; DSA and RSA under 2048 bits are not. */
const ALGORITHMS = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

/** `SHA256:…` of a key in SSH wire format, as `ssh-keygen -l` prints it. */
export function sshFingerprint(wireKey: Buffer): string {
  return `SHA256:${createHash('sha256').update(wireKey).digest('base64').replace(/=+$/, '')}`;
}

/** A public key line checked and parsed: its type, canonical text (no comment), fingerprint, comment. */
export function parsePublicKey(field: string, text: string): { algorithm: string; publicKey: string; fingerprint: string; comment: string } {
  if (typeof text !== 'string' || text.length === 0 || text.length > MAX_PUBLIC_KEY_CHARS)
    throw new ValidationError(
      field,
      typeof text === 'string' ? text.slice(0, 80) : text,
      `must be one public key line of at most ${MAX_PUBLIC_KEY_CHARS} characters`,
    );
  const line = text.trim();
  if (/[\u0000-\u001f\u007f]/.test(line)) throw new ValidationError(field, line.slice(0, 80), 'must be one line without control characters');
  if (/PRIVATE KEY/.test(line)) throw new ValidationError(field, line.slice(0, 40), 'is a private key: paste the public key (the .pub file)');
  const [type, data, ...rest] = line.split(/ +/);
  if (!type || !data || !ALGORITHMS.has(type))
    throw new ValidationError(field, line.slice(0, 80), `must start with a key type (${[...ALGORITHMS].join(', ')}) and its base64 data`);
  const parsed = ssh2.utils.parseKey(`${type} ${data}`);
  if (parsed instanceof Error || Array.isArray(parsed) || parsed.type !== type || parsed.isPrivateKey())
    throw new ValidationError(field, line.slice(0, 80), `is not a valid ${type} public key${parsed instanceof Error ? `: ${parsed.message}` : ''}`);
  const wire = parsed.getPublicSSH();
  if (type === 'ssh-rsa' && rsaBits(wire) < 2048)
    throw new ValidationError(field, line.slice(0, 80), `is an RSA key of ${rsaBits(wire)} bits; at least 2048 are required`);
  return { algorithm: type, publicKey: `${type} ${wire.toString('base64')}`, fingerprint: sshFingerprint(wire), comment: rest.join(' ') };
}

/** The modulus length of an `ssh-rsa` key in wire format. */
function rsaBits(wire: Buffer): number {
  let offset = 0;
  const next = () => {
    const length = wire.readUInt32BE(offset);
    const value = wire.subarray(offset + 4, offset + 4 + length);
    offset += 4 + length;
    return value;
  };
  next(); // type
  next(); // exponent
  const modulus = next();
  const significant = modulus[0] === 0 ? modulus.subarray(1) : modulus;
  return significant.length * 8 - Math.clz32(significant[0] ?? 0) + 24;
}

@injectable()
export class SshKeyService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Adds a public key for the caller; refused when any user already has it. */
  async add(actor: Actor, input: AddSshKeyInput): Promise<SshKey> {
    const key = parsePublicKey('input.publicKey', input.publicKey);
    const rawName = input.name ?? (key.comment.slice(0, 64).trim() || key.algorithm);
    const name = input.name == null ? rawName.replace(/[^A-Za-z0-9 ._-]/g, '_') : validName('input.name', input.name);
    return this.audit.transact(actor, async (tx, record) => {
      await tx.select({ id: users.id }).from(users).where(eq(users.id, actor.userId)).for('update');
      const existing = await tx
        .select({ id: sshKeys.id, userId: sshKeys.userId, fingerprint: sshKeys.fingerprint })
        .from(sshKeys)
        .where(eq(sshKeys.userId, actor.userId));
      if (existing.length >= MAX_SSH_KEYS_PER_USER)
        throw new ValidationError('input.publicKey', key.fingerprint, `cannot be added: you have ${existing.length} keys, the most allowed`);
      const [taken] = await tx.select({ userId: sshKeys.userId }).from(sshKeys).where(eq(sshKeys.fingerprint, key.fingerprint));
      if (taken)
        throw new ConflictError(
          'input.publicKey',
          key.fingerprint,
          taken.userId === actor.userId ? 'is already one of your keys' : 'is already registered (a key belongs to one user)',
        );
      const row: SshKey = {
        id: newId(),
        userId: actor.userId,
        name: validName('input.name', name),
        algorithm: key.algorithm,
        publicKey: key.publicKey,
        fingerprint: key.fingerprint,
        lastUsedAt: null,
        createdAt: new Date(),
      };
      const [inserted] = await tx.insert(sshKeys).values(row).returning();
      await record({ action: 'sshKey.add', objectType: 'SshKey', objectId: row.id, ownerId: actor.userId, after: inserted });
      return inserted!;
    });
  }

  /** Removes one of the caller's keys; the jump server refuses it from the next authentication on. */
  async remove(actor: Actor, keyId: string): Promise<SshKey> {
    const id = validId('input.keyId', keyId);
    return this.audit.transact(actor, async (tx, record) => {
      const [removed] = await tx
        .delete(sshKeys)
        .where(and(eq(sshKeys.id, id), eq(sshKeys.userId, actor.userId)))
        .returning();
      if (!removed) throw new NotFoundError('input.keyId', id, 'SSH key');
      await record({ action: 'sshKey.remove', objectType: 'SshKey', objectId: id, ownerId: actor.userId, before: removed });
      return removed;
    });
  }

  /** A user's keys, oldest first, for that user or an admin (others see none). */
  async keysOfUser(actor: Actor, userId: string): Promise<SshKey[]> {
    if (!isAdmin(actor) && actor.userId !== userId) return [];
    return this.keysOf(userId);
  }

  /** A user's keys, oldest first. */
  async keysOf(userId: string): Promise<SshKey[]> {
    return this.db.select().from(sshKeys).where(eq(sshKeys.userId, userId)).orderBy(asc(sshKeys.createdAt), asc(sshKeys.id));
  }

  /** The key with this fingerprint and its user, for the jump server. */
  async byFingerprint(fingerprint: string): Promise<{ key: SshKey; userName: string } | undefined> {
    const [row] = await this.db
      .select({ key: sshKeys, userName: users.name })
      .from(sshKeys)
      .innerJoin(users, eq(users.id, sshKeys.userId))
      .where(eq(sshKeys.fingerprint, fingerprint));
    return row;
  }

  /** Notes that a key authenticated (shown on `me { sshKeys { lastUsedAt } }`). */
  async touch(keyId: string): Promise<void> {
    await this.db.update(sshKeys).set({ lastUsedAt: new Date() }).where(eq(sshKeys.id, keyId));
  }
}
