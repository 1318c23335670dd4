/**
 * Sign-in with username and password over HTTP: sessions are expiring, revocable tokens of the
 * user's own scope; failed attempts are rate limited per username and per source; passwords are
 * scrypt hashes that never reach the audit log.
 */
import 'reflect-metadata';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignInLimiter } from '../src/auth/sign-in-limiter.js';
import { hashPassword, verifyPassword } from '../src/auth/passwords.js';
import { apiTokens } from '../src/db/schema.js';
import { startController, type Controller } from '../src/server.js';
import { SESSION_TTL_MS } from '../src/services/session-service.js';
import { post } from '../src/testing/http.js';

const ERR = '... on Error { __typename code message field value }';
const SIGN_IN = `mutation($u: String!, $p: String!) { signIn(input: { username: $u, password: $p }) {
  __typename ... on SignInPayload { session { token expiresAt user { name role hasPassword } } }
  ... on RateLimitedError { retryAfterSeconds } ${ERR} } }`;

describe('sign-in sessions', () => {
  let controller: Controller;
  let url: string;
  let admin: string;

  const signIn = async (u: string, p: string) => (await post(url, null, SIGN_IN, { u, p })).body.data!.signIn;
  const me = (token: string) => post(url, token, '{ me { name role tokens { kind expiresAt revokedAt } } }');

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0 });
    url = controller.url;
    admin = controller.bootstrapSecret!;
  }, 60_000);
  afterAll(async () => controller?.close());

  it('signs the first admin in with the printed one-time password; the session acts as ADMIN and expires in 8 h', async () => {
    expect(controller.bootstrapPassword).toMatch(/^[A-Za-z0-9_-]{16}$/);
    const before = Date.now();
    const result = await signIn('admin', controller.bootstrapPassword!);
    expect(result).toMatchObject({ __typename: 'SignInPayload', session: { user: { name: 'admin', role: 'ADMIN', hasPassword: true } } });
    const expires = Date.parse(result.session.expiresAt);
    expect(expires - before).toBeGreaterThanOrEqual(SESSION_TTL_MS - 1000);
    expect(expires - before).toBeLessThanOrEqual(SESSION_TTL_MS + 5000);
    const r = await me(result.session.token);
    expect(r.status).toBe(200);
    expect(r.body.data.me.role).toBe('ADMIN');
    expect(r.body.data.me.tokens.map((t: { kind: string }) => t.kind)).toEqual(expect.arrayContaining(['API', 'SESSION']));
    // an admin session may do admin things
    const users = await post(url, result.session.token, '{ users(first: 5) { edges { node { name } } } }');
    expect(users.body.errors).toBeUndefined();
  });

  it('signOut revokes the session at once; API tokens are not ended by signOut', async () => {
    const { session } = await signIn('admin', controller.bootstrapPassword!);
    const out = await post(url, session.token, `mutation { signOut { __typename ... on SignOutPayload { signedOut { tokenId } } ${ERR} } }`);
    expect(out.body.data.signOut.__typename).toBe('SignOutPayload');
    expect((await me(session.token)).status).toBe(401);
    const api = await post(url, admin, `mutation { signOut { __typename ${ERR} } }`);
    expect(api.body.data.signOut).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    expect((await me(admin)).status).toBe(200);
  });

  it('refuses an expired session', async () => {
    const { session } = await signIn('admin', controller.bootstrapPassword!);
    expect((await me(session.token)).status).toBe(200);
    await controller.store.db
      .update(apiTokens)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(apiTokens.prefix, session.token.slice(0, 10)));
    const r = await me(session.token);
    expect(r.status).toBe(401);
    expect(r.body.errors![0].message).toBe('Invalid or revoked API token');
  });

  it('answers a wrong password and an unknown user alike, at the password field, and limits failures per username', async () => {
    await post(url, admin, `mutation { createUser(input: { name: "carol", password: "carol-password-1" }) { __typename } }`);
    const wrong = await signIn('carol', 'wrong-password');
    const unknown = await signIn('nobody', 'wrong-password');
    expect(wrong).toMatchObject({ __typename: 'SignInFailedError', code: 'SIGN_IN_FAILED', field: 'input.password' });
    expect(unknown).toEqual(wrong);
    for (let i = 0; i < 4; i++) expect((await signIn('carol', `wrong-${i}`)).__typename).toBe('SignInFailedError');
    // the sixth attempt is refused without checking, even with the right password
    const limited = await signIn('carol', 'carol-password-1');
    expect(limited).toMatchObject({ __typename: 'RateLimitedError', code: 'RATE_LIMITED', field: 'input.username' });
    expect(limited.retryAfterSeconds).toBeGreaterThan(14 * 60);
    // other usernames from the same address still sign in (the per-source limit is 20)
    expect((await signIn('admin', controller.bootstrapPassword!)).__typename).toBe('SignInPayload');
  });

  it('setPassword: users change their own with the current one, which ends their other sessions', async () => {
    await post(url, admin, `mutation { createUser(input: { name: "dave", password: "dave-password-1" }) { __typename } }`);
    const first = (await signIn('dave', 'dave-password-1')).session.token;
    const second = (await signIn('dave', 'dave-password-1')).session.token;
    const SET = `mutation($p: String!, $c: String) { setPassword(input: { password: $p, currentPassword: $c }) { __typename ${ERR} } }`;
    const bad = await post(url, second, SET, { p: 'dave-password-2', c: 'not-it' });
    expect(bad.body.data.setPassword).toMatchObject({ __typename: 'ValidationError', field: 'input.currentPassword' });
    const good = await post(url, second, SET, { p: 'dave-password-2', c: 'dave-password-1' });
    expect(good.body.data.setPassword.__typename).toBe('SetPasswordPayload');
    expect((await me(first)).status).toBe(401);
    expect((await me(second)).status).toBe(200);
    expect((await signIn('dave', 'dave-password-1')).__typename).toBe('SignInFailedError');
    expect((await signIn('dave', 'dave-password-2')).__typename).toBe('SignInPayload');
    // a USER session acts with USER scope
    const users = await post(url, second, '{ users(first: 5) { edges { node { name } } } }');
    expect(users.body.errors![0].message).toContain('requires an admin');
  });

  it('keeps password hashes out of the audit log', async () => {
    const log = await post(url, admin, '{ auditLog(first: 100) { edges { node { action after before } } } }');
    const text = JSON.stringify(log.body.data);
    expect(text).toContain('user.setPassword');
    expect(text).not.toContain('scrypt$');
    expect(text).not.toContain('passwordHash');
  });
});

describe('passwords and the limiter', () => {
  it('hashes with scrypt and a fresh salt; verifies only the right password', async () => {
    const a = await hashPassword('correct horse battery');
    const b = await hashPassword('correct horse battery');
    expect(a).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
    expect(await verifyPassword('correct horse battery', a)).toBe(true);
    expect(await verifyPassword('correct horse batterY', a)).toBe(false);
    expect(await verifyPassword('anything', null)).toBe(false);
  });

  it('counts failures in a sliding window per username and per source', () => {
    let now = 0;
    const limiter = new SignInLimiter({ perUsername: 2, perSource: 3, windowMs: 1000 }, () => now);
    limiter.fail('Eve', '10.0.0.1');
    expect(limiter.retryAfterMs('eve', '10.0.0.9')).toBe(0);
    now = 100;
    limiter.fail('eve', '10.0.0.2');
    expect(limiter.retryAfterMs('EVE', '10.0.0.9')).toBe(900);
    now = 900;
    expect(limiter.retryAfterMs('eve', '10.0.0.9')).toBe(100);
    now = 1000;
    expect(limiter.retryAfterMs('eve', '10.0.0.9')).toBe(0);
    for (const name of ['a', 'b', 'c']) limiter.fail(name, '10.0.0.3');
    expect(limiter.retryAfterMs('fresh', '10.0.0.3')).toBe(1000);
    limiter.succeed('a');
    expect(limiter.retryAfterMs('a', '10.0.0.4')).toBe(0);
  });
});
