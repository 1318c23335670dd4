/**
 * The web terminal's records: tickets (`openTerminal`: short-lived, single use, bound to one
 * user, instance and login name; only their hash is stored, and redeeming deletes them, so a
 * ticket works once across replicas) and the instances' SSH host keys, learned on first use and
 * then required.
 */
import { createHash, randomBytes } from 'node:crypto';
import { and, asc, eq, gt, lt } from 'drizzle-orm';
import ssh2 from 'ssh2';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { instanceSshHostKeys, instances, terminalTickets, users } from '../db/schema.js';
import { ClockToken, DatabaseToken, type Clock } from '../di/tokens.js';
import { NotFoundError, ValidationError } from '../support/errors.js';
import { validId } from '../support/validate.js';
import { AuditService } from './audit-service.js';
import { loadOwnedInstance } from './ownership.js';
import { sshFingerprint } from './ssh-key-service.js';

/** How long a ticket may wait for its WebSocket (seconds). */
export const TERMINAL_TICKET_TTL_MS = 60_000;
/** A login name on an instance: what `useradd` accepts, at most 32 characters. */
const LOGIN_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;

/** What `openTerminal` hands the browser. */
export interface TerminalTicket {
  /** The secret to send in the WebSocket's first message; shown once. */
  ticket: string;
  expiresAt: Date;
  instanceId: string;
  username: string;
}

/** A redeemed ticket: who may open which terminal. */
export interface TerminalGrant {
  userId: string;
  userName: string;
  instanceId: string;
  username: string;
}

/** A stored instance host key. */
export type InstanceSshHostKey = typeof instanceSshHostKeys.$inferSelect;

/** A login name checked at the boundary. */
export function validLoginName(field: string, value: string): string {
  if (typeof value !== 'string' || !LOGIN_NAME.test(value))
    throw new ValidationError(
      field,
      typeof value === 'string' ? value.slice(0, 64) : value,
      'must be a login name: 1-32 characters of letters, digits, "_", "." or "-", starting with a letter or "_"',
    );
  return value;
}

const hashOf = (secret: string) => createHash('sha256').update(secret).digest('hex');

@injectable()
export class TerminalService {
  /** Whether this controller serves `/terminal` (it needs the SSH jump server); set when it starts. */
  gatewayRunning = false;

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(ClockToken) private readonly clock: Clock,
  ) {}

  /** Issues a ticket for a terminal on one of the actor's instances (any instance, for an admin); audited. */
  async open(actor: Actor, instanceId: string, username: string, ttlMs = TERMINAL_TICKET_TTL_MS): Promise<TerminalTicket> {
    const login = validLoginName('input.username', username);
    const id = validId('input.instanceId', instanceId);
    const secret = `ght_${randomBytes(32).toString('base64url')}`;
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + ttlMs);
    await this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', id);
      if (!this.gatewayRunning)
        throw new ValidationError('input.instanceId', id, 'cannot get a web terminal: this controller runs no SSH jump server (started with --no-ssh)');
      await tx.delete(terminalTickets).where(lt(terminalTickets.expiresAt, now));
      await tx.insert(terminalTickets).values({ secretHash: hashOf(secret), userId: actor.userId, instanceId: id, username: login, expiresAt });
      await record({
        action: 'terminal.open',
        objectType: 'Instance',
        objectId: id,
        ownerId: instance.ownerId,
        after: { username: login, expiresAt },
      });
    });
    return { ticket: secret, expiresAt, instanceId: id, username: login };
  }

  /** Redeems a ticket once: the grant, or undefined when it is unknown, used or expired. */
  async redeem(secret: string): Promise<TerminalGrant | undefined> {
    if (typeof secret !== 'string' || !/^ght_[A-Za-z0-9_-]{43}$/.test(secret)) return undefined;
    const [row] = await this.db
      .delete(terminalTickets)
      .where(and(eq(terminalTickets.secretHash, hashOf(secret)), gt(terminalTickets.expiresAt, this.clock.now())))
      .returning();
    if (!row) return undefined;
    const [user] = await this.db.select({ name: users.name }).from(users).where(eq(users.id, row.userId));
    return user && { userId: row.userId, userName: user.name, instanceId: row.instanceId, username: row.username };
  }

  /** The instance's learned host keys (the owner or an admin; others see none). */
  async hostKeysOf(actor: Actor, instance: { id: string; ownerId: string }): Promise<InstanceSshHostKey[]> {
    if (!isAdmin(actor) && actor.userId !== instance.ownerId) return [];
    return this.hostKeys(instance.id);
  }

  /** The instance's learned host keys. */
  async hostKeys(instanceId: string): Promise<InstanceSshHostKey[]> {
    return this.db.select().from(instanceSshHostKeys).where(eq(instanceSshHostKeys.instanceId, instanceId)).orderBy(asc(instanceSshHostKeys.algorithm));
  }

  /** Stores keys seen on first use (`type base64` each); a key type already known is kept as it was. */
  async learnHostKeys(instanceId: string, keys: readonly string[]): Promise<InstanceSshHostKey[]> {
    const rows = keys.flatMap((line) => {
      const [algorithm, data] = line.trim().split(/\s+/);
      if (!algorithm || !data || !/^[A-Za-z0-9@.-]{1,64}$/.test(algorithm)) return [];
      // only what parses as a public key of the type it names
      const parsed = ssh2.utils.parseKey(`${algorithm} ${data}`);
      if (parsed instanceof Error || Array.isArray(parsed) || parsed.type !== algorithm || parsed.isPrivateKey()) return [];
      const wire = parsed.getPublicSSH();
      return [{ instanceId, algorithm, publicKey: `${algorithm} ${wire.toString('base64')}`, fingerprint: sshFingerprint(wire) }];
    });
    if (rows.length > 0) await this.db.insert(instanceSshHostKeys).values(rows).onConflictDoNothing();
    return this.hostKeys(instanceId);
  }

  /** Forgets an instance's host keys (after it was reinstalled): the next terminal learns them again; audited. */
  async forgetHostKeys(actor: Actor, instanceId: string): Promise<InstanceSshHostKey[]> {
    const id = validId('input.instanceId', instanceId);
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', id);
      const removed = await tx.delete(instanceSshHostKeys).where(eq(instanceSshHostKeys.instanceId, id)).returning();
      if (removed.length === 0) throw new NotFoundError('input.instanceId', id, 'learned SSH host key of instance');
      await record({ action: 'instance.forgetSshHostKeys', objectType: 'Instance', objectId: id, ownerId: instance.ownerId, before: removed });
      return removed;
    });
  }

  /** The instance's name and owner, for the terminal's messages. */
  async instanceOf(instanceId: string): Promise<{ id: string; name: string; ownerId: string } | undefined> {
    const [row] = await this.db
      .select({ id: instances.id, name: instances.name, ownerId: instances.ownerId })
      .from(instances)
      .where(eq(instances.id, instanceId));
    return row;
  }
}
