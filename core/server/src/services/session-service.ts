/**
 * Sign-in with username and password for people at the web UI: a session is a short-lived token
 * of the user's own scope (admin users: ADMIN), stored hashed like API tokens, ended by signOut or
 * its expiry. Failed attempts are rate limited per username and per source address and logged.
 */
import { and, eq, isNull, ne } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { hashPassword, validPassword, verifyPassword } from '../auth/passwords.js';
import { SignInLimiter } from '../auth/sign-in-limiter.js';
import type { Database } from '../db/database.js';
import { apiTokens, users } from '../db/schema.js';
import { DatabaseToken, EventBusToken, LoggerToken } from '../di/tokens.js';
import type { EventBus } from '../events/event-bus.js';
import { ForbiddenError, NotFoundError, RateLimitedError, SignInFailedError, ValidationError } from '../support/errors.js';
import type { Logger } from '../support/logger.js';
import { validId } from '../support/validate.js';
import { AuditService } from './audit-service.js';
import { UserService, auditedUser, mintToken, type User } from './user-service.js';

/** How long a session lasts: a working day. */
export const SESSION_TTL_MS = 8 * 60 * 60_000;

/** A new session: the bearer secret (shown once), its expiry and its user. */
export interface NewSession {
  token: string;
  expiresAt: Date;
  user: User;
}

/** Input of `setPassword`. */
export interface SetPasswordInput {
  /** Default: the caller. Admins set anyone's; users only their own. */
  userId?: string | null;
  password: string;
  /** Required when users change their own password. */
  currentPassword?: string | null;
}

@injectable()
export class SessionService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(LoggerToken) private readonly logger: Logger,
    @inject(SignInLimiter) private readonly limiter: SignInLimiter,
    @inject(UserService) private readonly users: UserService,
  ) {}

  /** Checks the password and issues a session; refused without checking while the username or source is rate limited. */
  async signIn(input: { username: string; password: string }, source: string, requestId: string): Promise<NewSession> {
    const username = input.username.trim();
    if (username === '' || username.length > 100) throw new ValidationError('input.username', input.username, 'must be 1 to 100 characters');
    if (input.password === '') throw new ValidationError('input.password', '(hidden)', 'is required');
    const waitMs = this.limiter.retryAfterMs(username, source);
    if (waitMs > 0) {
      this.logger.warn(`refused sign-in of "${username}" from ${source}: rate limited for ${Math.ceil(waitMs / 1000)} s`);
      throw new RateLimitedError(Math.ceil(waitMs / 1000), 'input.username', username);
    }
    const [user] = await this.db.select().from(users).where(eq(users.name, username)).limit(1);
    if (!(await verifyPassword(input.password, user?.passwordHash))) {
      this.limiter.fail(username, source);
      this.logger.warn(`failed sign-in of "${username}" from ${source}${user ? '' : ' (no such user)'}`);
      throw new SignInFailedError('input.password');
    }
    this.limiter.succeed(username);
    const expiresAt = new Date(Date.now() + SESSION_TTL_MS);
    const actor: Actor = { userId: user!.id, userName: user!.name, role: user!.role, tokenId: '', scope: user!.role, hostId: null, requestId };
    const { secret, token } = mintToken(user!.id, `session from ${source}`.slice(0, 100), user!.role, null, expiresAt);
    await this.audit.transact({ ...actor, tokenId: token.id }, async (tx, record) => {
      await tx.insert(apiTokens).values(token);
      await record({ action: 'session.create', objectType: 'ApiToken', objectId: token.id, ownerId: user!.id, after: token });
    });
    return { token: secret, expiresAt, user: user! };
  }

  /** Ends the caller's session (idempotent); API tokens are revoked with revokeApiToken instead. */
  async signOut(actor: Actor): Promise<{ tokenId: string }> {
    const [token] = await this.db.select({ kind: apiTokens.kind }).from(apiTokens).where(eq(apiTokens.id, actor.tokenId));
    if (token?.kind !== 'session') throw new ForbiddenError('signOut ends a sign-in session; this request used an API token (revoke it with revokeApiToken)');
    await this.users.revokeToken(actor, actor.tokenId);
    return { tokenId: actor.tokenId };
  }

  /**
   * Sets a user's password (admins: anyone's; users: their own, giving the current one) and ends
   * that user's other sessions.
   */
  async setPassword(actor: Actor, input: SetPasswordInput): Promise<User> {
    const userId = input.userId ? validId('input.userId', input.userId) : actor.userId;
    if (!isAdmin(actor) && userId !== actor.userId) throw new NotFoundError('input.userId', userId, 'user');
    const password = validPassword('input.password', input.password);
    const [target] = await this.db.select().from(users).where(eq(users.id, userId));
    if (!target) throw new NotFoundError('input.userId', userId, 'user');
    if (!isAdmin(actor)) {
      if (!input.currentPassword) throw new ValidationError('input.currentPassword', '(hidden)', 'is required to change your own password');
      if (!(await verifyPassword(input.currentPassword, target.passwordHash)))
        throw new ValidationError('input.currentPassword', '(hidden)', 'is not your current password');
    }
    const passwordHash = await hashPassword(password);
    const { user, ended } = await this.audit.transact(actor, async (tx, record) => {
      const [after] = await tx.update(users).set({ passwordHash }).where(eq(users.id, userId)).returning();
      await record({ action: 'user.setPassword', objectType: 'User', objectId: userId, ownerId: userId, after: auditedUser(after!) });
      const revoked = await tx
        .update(apiTokens)
        .set({ revokedAt: new Date() })
        .where(and(eq(apiTokens.userId, userId), eq(apiTokens.kind, 'session'), isNull(apiTokens.revokedAt), ne(apiTokens.id, actor.tokenId)))
        .returning({ id: apiTokens.id });
      return { user: after!, ended: revoked };
    });
    for (const { id } of ended) this.events.publish('tokenRevoked', { tokenId: id });
    return user;
  }
}
