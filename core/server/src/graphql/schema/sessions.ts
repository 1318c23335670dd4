/** Sign-in with username and password (sessions for the web UI), sign-out, and passwords. */
import { ForbiddenError, NotFoundError, RateLimitedError, SignInFailedError, ValidationError } from '../../support/errors.js';
import type { NewSession } from '../../services/session-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { resultOf } from './mutation-result.js';
import { UserRef } from './users.js';

const SessionRef = builder.objectRef<NewSession>('Session').implement({
  description: "A sign-in session: a bearer token of the user's own scope that expires (or ends with signOut).",
  fields: (t) => ({
    token: t.exposeString('token', { description: 'The bearer secret. It is not stored and cannot be shown again.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'When the session ends by itself: 8 hours after sign-in.' }),
    user: t.field({ type: UserRef, description: 'Who signed in.', resolve: (s) => s.user }),
  }),
});

const SignedOutRef = builder.objectRef<{ tokenId: string }>('SignedOut').implement({
  description: 'The session that signOut ended.',
  fields: (t) => ({ tokenId: t.exposeID('tokenId', { description: 'The session token that was revoked.' }) }),
});

const SignInInput = builder.inputType('SignInInput', {
  description: 'Credentials of a user who has a password (User.hasPassword).',
  fields: (t) => ({
    username: t.string({ required: true, description: 'The user\'s name, e.g. "admin".' }),
    password: t.string({ required: true, description: "The user's password, as set by createUser or setPassword." }),
  }),
});

const SetPasswordInput = builder.inputType('SetPasswordInput', {
  description: 'A new sign-in password for a user.',
  fields: (t) => ({
    userId: t.id({ description: "Default: the caller. Admins set anyone's password; users only their own." }),
    password: t.string({ required: true, description: 'The new password: 10 to 200 characters.' }),
    currentPassword: t.string({ description: 'Required when users change their own password.' }),
  }),
});

builder.mutationFields((t) => ({
  signIn: t.field({
    type: SessionRef,
    description:
      'Signs in with username and password (no token needed) and returns a session token for the Authorization header. After 5 failures for a username (or 20 from an address) in 15 minutes, attempts are refused without checking.',
    args: { input: t.arg({ type: SignInInput, required: true, description: 'Username and password.' }) },
    errors: resultOf('SignIn', 'session', [ValidationError, SignInFailedError, RateLimitedError]),
    resolve: (_r, { input }, ctx) => ctx.services.sessions.signIn(input, ctx.clientAddress, ctx.requestId),
  }),
  signOut: t.field({
    type: SignedOutRef,
    description: "Ends the caller's sign-in session at once (its WebSocket connections close); succeeds when already ended.",
    errors: resultOf('SignOut', 'signedOut', [ForbiddenError]),
    resolve: (_r, _a, ctx) => ctx.services.sessions.signOut(requireActor(ctx)),
  }),
  setPassword: t.field({
    type: UserRef,
    description: "Sets a user's sign-in password and ends that user's other sessions.",
    args: { input: t.arg({ type: SetPasswordInput, required: true, description: "Whose password, the new one, and (for one's own) the current one." }) },
    errors: resultOf('SetPassword', 'user', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.sessions.setPassword(requireActor(ctx), input),
  }),
}));
