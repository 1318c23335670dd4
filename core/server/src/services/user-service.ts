/**
 * Users, their quotas and their API tokens. Token secrets are 256-bit random values; only their
 * SHA-256 is stored (a slow hash adds nothing for secrets of that entropy), and a secret is shown
 * exactly once, when it is created.
 */
import { createHash, randomBytes } from 'node:crypto';
import { and, asc, eq, gt, inArray, isNull, or } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, systemActor, type Actor } from '../auth/actor.js';
import { hashPassword, randomPassword, validPassword } from '../auth/passwords.js';
import type { Database } from '../db/database.js';
import { apiTokens, hosts, users } from '../db/schema.js';
import { ConflictError, ForbiddenError, NotFoundError, ValidationError, isUniqueViolation, mapUniqueViolations } from '../support/errors.js';
import { newId } from '../support/ids.js';
import type { EventBus } from '../events/event-bus.js';
import { DatabaseToken, EventBusToken } from '../di/tokens.js';
import { validId, validName, validQuota } from '../support/validate.js';
import { AuditService } from './audit-service.js';

/** A user row. */
export type User = typeof users.$inferSelect;
/** A token row (never includes the secret). */
export type ApiToken = typeof apiTokens.$inferSelect;
/** Token scopes. */
export type TokenScope = ApiToken['scope'];

const TOKEN_PREFIX = 'gh_';
// lastUsedAt is refreshed at most this often, so authenticating is not a write per request
const LAST_USED_RESOLUTION_MS = 60_000;

/** The per-user quotas; each is a maximum count, null meaning unlimited. */
export const QUOTA_NAMES = ['quotaIpv4Addresses', 'quotaIpv6Prefixes', 'quotaPortForwards', 'quotaForwardedPorts', 'quotaWebProxies'] as const;
/** One quota's name. */
export type QuotaName = (typeof QUOTA_NAMES)[number];
/** Quota values as given by a client. */
export type QuotaInput = { [K in QuotaName]?: number | null };

/** Input of `createUser`. */
export interface CreateUserInput extends QuotaInput {
  name: string;
  role: 'admin' | 'user';
  /** The sign-in password; absent: the user signs in only after an admin sets one. */
  password?: string | null;
}

/** Input of `updateUserQuotas`; an absent field is left as it is, null means unlimited. */
export interface UpdateQuotasInput extends QuotaInput {
  userId: string;
  /** Day of the month (1-28) traffic billing periods start on; null: calendar months; absent: unchanged. */
  billingDay?: number | null;
}

/** Input of `createToken`. */
export interface CreateTokenInput {
  userId?: string | null;
  name: string;
  scope: TokenScope;
  /** Required for agent tokens: the host they act for. */
  hostId?: string | null;
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A user row as the audit log keeps it: without the password hash. */
export function auditedUser(user: User): Omit<User, 'passwordHash'> & { hasPassword: boolean } {
  const { passwordHash, ...rest } = user;
  return { ...rest, hasPassword: passwordHash !== null };
}

/** A new token row and its secret (shown once); sessions carry their expiry. */
export function mintToken(userId: string, name: string, scope: TokenScope, hostId: string | null, expiresAt: Date | null = null): { secret: string; token: ApiToken } {
  const secret = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const token: ApiToken = {
    id: newId(),
    userId,
    name,
    scope,
    kind: expiresAt ? 'session' : 'api',
    expiresAt,
    hostId,
    secretHash: hashSecret(secret),
    prefix: secret.slice(0, 10),
    createdAt: new Date(),
    lastUsedAt: null,
    revokedAt: null,
  };
  return { secret, token };
}

@injectable()
export class UserService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(EventBusToken) private readonly events: EventBus,
  ) {}

  /** Resolves a bearer secret to an actor; undefined for unknown or revoked tokens. */
  async authenticate(secret: string, requestId: string): Promise<Actor | undefined> {
    if (!secret.startsWith(TOKEN_PREFIX) || secret.length > 100) return undefined;
    const [row] = await this.db
      .select({ token: apiTokens, user: users })
      .from(apiTokens)
      .innerJoin(users, eq(users.id, apiTokens.userId))
      .where(
        and(
          eq(apiTokens.secretHash, hashSecret(secret)),
          isNull(apiTokens.revokedAt),
          or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, new Date())),
        ),
      )
      .limit(1);
    if (!row) return undefined;
    const now = Date.now();
    if (!row.token.lastUsedAt || now - row.token.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
      await this.db
        .update(apiTokens)
        .set({ lastUsedAt: new Date(now) })
        .where(eq(apiTokens.id, row.token.id));
    }
    return {
      userId: row.user.id,
      userName: row.user.name,
      role: row.user.role,
      tokenId: row.token.id,
      scope: row.token.scope,
      hostId: row.token.hostId,
      requestId,
    };
  }

  /**
   * On an empty store, creates the user `admin` with a random password and an admin token, and
   * returns both secrets, once. Returns undefined when any user exists (also when another replica
   * won the race).
   */
  async bootstrapAdmin(): Promise<{ user: User; secret: string; password: string } | undefined> {
    const [existing] = await this.db.select({ id: users.id }).from(users).limit(1);
    if (existing) return undefined;
    const actor = systemActor(newId());
    const password = randomPassword();
    const passwordHash = await hashPassword(password);
    try {
      return await this.audit.transact(actor, async (tx, record) => {
        const user: User = {
          id: newId(),
          name: 'admin',
          role: 'admin',
          ...quotasOf({}),
          passwordHash,
          billingDay: null,
          terminalRecording: false,
          createdAt: new Date(),
        };
        await tx.insert(users).values(user);
        await record({ action: 'user.create', objectType: 'User', objectId: user.id, ownerId: user.id, after: auditedUser(user) });
        const { secret, token } = mintToken(user.id, 'bootstrap', 'admin', null);
        await tx.insert(apiTokens).values(token);
        await record({ action: 'token.create', objectType: 'ApiToken', objectId: token.id, ownerId: user.id, after: token });
        return { user, secret, password };
      });
    } catch (err) {
      if (isUniqueViolation(err, 'users_name_unique')) return undefined;
      throw err;
    }
  }

  /** Creates a user (admin only). */
  async createUser(actor: Actor, input: CreateUserInput): Promise<User> {
    requireAdmin(actor, 'createUser');
    const user: User = {
      id: newId(),
      name: validName('input.name', input.name),
      role: input.role,
      ...quotasOf(input),
      passwordHash: input.password == null ? null : await hashPassword(validPassword('input.password', input.password)),
      billingDay: null,
      terminalRecording: false,
      createdAt: new Date(),
    };
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          await tx.insert(users).values(user);
          await record({ action: 'user.create', objectType: 'User', objectId: user.id, ownerId: user.id, after: auditedUser(user) });
          return user;
        }),
      { users_name_unique: () => new ConflictError('input.name', input.name, 'is already taken by another user') },
    );
  }

  /** Changes a user's quotas (admin only). Lowering a quota below current use keeps what exists and refuses new allocations. */
  async updateQuotas(actor: Actor, input: UpdateQuotasInput): Promise<User> {
    requireAdmin(actor, 'updateUserQuotas');
    const id = validId('input.userId', input.userId);
    const patch: Partial<User> = {};
    for (const name of QUOTA_NAMES) if (input[name] !== undefined) patch[name] = validQuota(`input.${name}`, input[name]);
    if (input.billingDay !== undefined) {
      if (input.billingDay !== null && (!Number.isInteger(input.billingDay) || input.billingDay < 1 || input.billingDay > 28))
        throw new ValidationError('input.billingDay', input.billingDay, 'must be a day of the month from 1 to 28 (or null: calendar months)');
      patch.billingDay = input.billingDay;
    }
    return this.audit.transact(actor, async (tx, record) => {
      const [before] = await tx.select().from(users).where(eq(users.id, id)).for('update');
      if (!before) throw new NotFoundError('input.userId', id, 'user');
      if (Object.keys(patch).length === 0) return before;
      const [after] = await tx.update(users).set(patch).where(eq(users.id, id)).returning();
      await record({ action: 'user.updateQuotas', objectType: 'User', objectId: id, ownerId: id, before: auditedUser(before), after: auditedUser(after!) });
      return after!;
    });
  }

  /**
   * Creates a token and returns its secret (shown once). Admins create any scope for anyone;
   * a user creates `user`-scoped tokens for themselves. Admin scope needs an admin user.
   */
  async createToken(actor: Actor, input: CreateTokenInput): Promise<{ token: ApiToken; secret: string }> {
    const userId = input.userId ? validId('input.userId', input.userId) : actor.userId;
    const name = validName('input.name', input.name);
    if (!isAdmin(actor)) {
      if (userId !== actor.userId) throw new NotFoundError('input.userId', userId, 'user');
      if (input.scope !== 'user')
        throw new ForbiddenError(`input.scope "${input.scope}": only an admin can create ${input.scope} tokens`, 'input.scope', input.scope);
    }
    return this.audit.transact(actor, async (tx, record) => {
      const [user] = await tx.select().from(users).where(eq(users.id, userId));
      if (!user) throw new NotFoundError('input.userId', userId, 'user');
      if (input.scope === 'admin' && user.role !== 'admin') {
        throw new ValidationError('input.scope', input.scope, `cannot be given to user "${user.name}", who is not an admin`);
      }
      let hostId: string | null = null;
      if (input.scope === 'agent') {
        if (input.hostId == null) throw new ValidationError('input.hostId', null, 'is required for an AGENT token: the host the agent manages');
        hostId = validId('input.hostId', input.hostId);
        const [host] = await tx.select({ id: hosts.id }).from(hosts).where(eq(hosts.id, hostId));
        if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
      } else if (input.hostId != null) {
        throw new ValidationError('input.hostId', input.hostId, 'applies to AGENT tokens only');
      }
      const { secret, token } = mintToken(userId, name, input.scope, hostId);
      await tx.insert(apiTokens).values(token);
      await record({ action: 'token.create', objectType: 'ApiToken', objectId: token.id, ownerId: userId, after: token });
      return { token, secret };
    });
  }

  /**
   * Revokes a token; succeeds when already revoked. Users revoke their own, admins any. Once it
   * commits, every replica closes the connections and subscriptions opened with the token (also
   * when it was already revoked, so repeating the call repeats the announcement).
   */
  async revokeToken(actor: Actor, tokenId: string): Promise<ApiToken> {
    const id = validId('input.tokenId', tokenId);
    const token = await this.audit.transact(actor, async (tx, record) => {
      const [before] = await tx.select().from(apiTokens).where(eq(apiTokens.id, id)).for('update');
      if (!before || (!isAdmin(actor) && before.userId !== actor.userId)) throw new NotFoundError('input.tokenId', id, 'token');
      if (before.revokedAt) return before;
      const [after] = await tx.update(apiTokens).set({ revokedAt: new Date() }).where(eq(apiTokens.id, id)).returning();
      await record({ action: 'token.revoke', objectType: 'ApiToken', objectId: id, ownerId: before.userId, before, after });
      return after!;
    });
    this.events.publish('tokenRevoked', { tokenId: token.id });
    return token;
  }

  /**
   * What a refused secret was, for the log: its listing prefix (never the secret), and for a
   * known token its id, scope, host and whether it is revoked.
   */
  async describeSecret(secret: string | undefined): Promise<string> {
    if (!secret) return 'no bearer token';
    if (!secret.startsWith(TOKEN_PREFIX) || secret.length > 100) return 'a malformed token';
    const prefix = secret.slice(0, 10);
    const [row] = await this.db
      .select()
      .from(apiTokens)
      .where(eq(apiTokens.secretHash, hashSecret(secret)))
      .limit(1);
    if (!row) return `unknown token ${prefix}…`;
    const state = row.revokedAt ? 'revoked' : 'valid';
    return `${state} ${row.scope} token ${row.prefix}… (token ${row.id}${row.hostId ? `, host ${row.hostId}` : ''})`;
  }

  /** Users by id, whoever asks (the caller checks who may see them); unknown ids are absent. */
  async getMany(ids: readonly string[]): Promise<User[]> {
    if (ids.length === 0) return [];
    return this.db.select().from(users).where(inArray(users.id, [...ids]));
  }

  /** A user by id, if the actor may see it (admins: all; users: themselves). */
  async get(actor: Actor, id: string): Promise<User | undefined> {
    if (!isAdmin(actor) && id !== actor.userId) return undefined;
    const [row] = await this.db.select().from(users).where(eq(users.id, id));
    return row;
  }

  /** Users in creation order (admin only). */
  async list(actor: Actor, page: { after?: string; limit: number }): Promise<User[]> {
    requireAdmin(actor, 'users');
    return this.db
      .select()
      .from(users)
      .where(page.after ? gt(users.id, page.after) : undefined)
      .orderBy(asc(users.id))
      .limit(page.limit);
  }

  /** A user's tokens, newest last. */
  async tokensOf(actor: Actor, userId: string): Promise<ApiToken[]> {
    if (!isAdmin(actor) && userId !== actor.userId) return [];
    return this.db.select().from(apiTokens).where(eq(apiTokens.userId, userId)).orderBy(asc(apiTokens.id));
  }
}

/** Every quota validated, absent ones unlimited. */
function quotasOf(input: QuotaInput): Record<QuotaName, number | null> {
  return Object.fromEntries(QUOTA_NAMES.map((name) => [name, validQuota(`input.${name}`, input[name])])) as Record<QuotaName, number | null>;
}

/** Throws FORBIDDEN unless the actor is an admin. */
export function requireAdmin(actor: Actor, operation: string): void {
  if (!isAdmin(actor)) throw new ForbiddenError(`${operation} requires an admin token`);
}
