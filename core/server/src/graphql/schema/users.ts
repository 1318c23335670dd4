/** Users, API tokens and quotas. */
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf, pageTypes } from '../pagination.js';
import { QUOTA_NAMES, type ApiToken, type QuotaName, type User } from '../../services/user-service.js';
import { resultOf } from './mutation-result.js';

const QUOTA_DESCRIPTIONS: Record<QuotaName, string> = {
  quotaIpv4Addresses: 'IPv4 addresses.',
  quotaIpv6Prefixes: 'IPv6 addresses or delegated prefixes.',
  quotaPortForwards: 'Port forwards.',
  quotaForwardedPorts: 'Host ports held by port forwards, counted per protocol: a forward of 8000-8099 on BOTH counts 200.',
  quotaWebProxies: 'Web proxy domains.',
};

const RoleEnum = builder.enumType('Role', {
  description: "A user's role.",
  values: {
    ADMIN: { value: 'admin', description: 'Manages hosts, pools, users and every object; may hold ADMIN tokens.' },
    USER: { value: 'user', description: 'A tenant: sees and changes only their own instances and what hangs off them.' },
  } as const,
});

const TokenScopeEnum = builder.enumType('TokenScope', {
  description: "ADMIN: everything (admin users only). USER: the owner's own objects. AGENT: a host agent.",
  values: {
    ADMIN: { value: 'admin', description: 'Everything; only for admin users.' },
    USER: { value: 'user', description: "The owner's own objects, even when the owner is an admin." },
    AGENT: { value: 'agent', description: "A host agent: reads its host's desired state and reports status; nothing else." },
  } as const,
});

const TokenKindEnum = builder.enumType('TokenKind', {
  description: 'How a token came to be.',
  values: {
    API: { value: 'api', description: 'Made with createApiToken for automation; valid until revoked.' },
    SESSION: { value: 'session', description: 'Issued by signIn for the web UI; valid until it expires or signOut.' },
  } as const,
});

export const UserRef = builder.objectRef<User>('User');
const ApiTokenRef = builder.objectRef<ApiToken>('ApiToken');

ApiTokenRef.implement({
  description: 'An API token. The secret is shown only once, in CreateApiTokenPayload.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The token id (not the secret).' }),
    name: t.exposeString('name', { description: 'A label chosen at creation, e.g. "billing".' }),
    scope: t.field({ type: TokenScopeEnum, description: 'What the token may do.', resolve: (tok) => tok.scope }),
    prefix: t.exposeString('prefix', { description: 'The first characters of the secret, to recognise it.' }),
    kind: t.field({
      type: TokenKindEnum,
      description: 'API: made with createApiToken, valid until revoked. SESSION: issued by signIn, valid until expiresAt or signOut.',
      resolve: (tok) => tok.kind,
    }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true, description: 'Sessions only.' }),
    hostId: t.exposeID('hostId', { nullable: true, description: 'AGENT tokens: the host they act for.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the token was created.' }),
    lastUsedAt: t.expose('lastUsedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'Last authenticated request, refreshed at most once a minute; null: never used.',
    }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true, description: 'When it was revoked; null while it is valid.' }),
  }),
});

UserRef.implement({
  description: 'A person or system with API tokens; owns instances and what hangs off them. Quotas bound what they may hold.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The user id.' }),
    name: t.exposeString('name', { description: 'Unique among users.' }),
    role: t.field({ type: RoleEnum, description: 'ADMIN or USER.', resolve: (u) => u.role }),
    ...Object.fromEntries(
      QUOTA_NAMES.map((name) => [name, t.exposeInt(name, { nullable: true, description: `${QUOTA_DESCRIPTIONS[name]} Null: unlimited.` })]),
    ),
    hasPassword: t.boolean({ description: 'Whether the user can sign in with a password.', resolve: (u) => u.passwordHash !== null }),
    billingDay: t.exposeInt('billingDay', {
      nullable: true,
      description: "Day of the month (1-28, UTC) the user's traffic billing periods start on; null: calendar months.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the user was created.' }),
    tokens: t.field({
      type: [ApiTokenRef],
      description: "The user's API tokens, revoked ones included (their secrets are never shown again).",
      resolve: (u, _a, ctx) => ctx.services.users.tokensOf(requireActor(ctx), u.id),
    }),
  }),
});

builder.queryFields((t) => ({
  me: t.field({
    type: UserRef,
    description: 'The user the token belongs to.',
    resolve: async (_r, _a, ctx) => {
      const actor = requireActor(ctx);
      return (await ctx.services.users.get(actor, actor.userId))!;
    },
  }),
  user: t.field({
    type: UserRef,
    nullable: true,
    description: 'A user by id: admins any, users themselves; null otherwise.',
    args: { id: t.arg.id({ required: true, description: 'The user id.' }) },
    resolve: (_r, args, ctx) => ctx.services.users.get(requireActor(ctx), args.id),
  }),
  users: t.connection(
    {
      type: UserRef,
      description: 'All users (admin only).',
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        return connectionOf(await ctx.services.users.list(requireActor(ctx), page), page);
      },
    },
    ...pageTypes('users'),
  ),
}));

const CreateUserInput = builder.inputType('CreateUserInput', {
  description: 'A new user. Quotas are integers from 0 to 1000000000.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Unique among users (CONFLICT otherwise): 1-64 letters, digits, space, ".", "_" or "-".' }),
    role: t.field({ type: RoleEnum, defaultValue: 'user', description: 'Default USER.' }),
    password: t.string({ description: 'The sign-in password (10 to 200 characters). Absent: set later with setPassword.' }),
    ...Object.fromEntries(QUOTA_NAMES.map((name) => [name, t.int({ description: `${QUOTA_DESCRIPTIONS[name]} Null or absent: unlimited.` })])),
  }),
});

const UpdateUserQuotasInput = builder.inputType('UpdateUserQuotasInput', {
  description: 'Quotas to change, integers from 0 to 1000000000; absent ones keep their value.',
  fields: (t) => ({
    userId: t.id({ required: true, description: 'The user.' }),
    ...Object.fromEntries(QUOTA_NAMES.map((name) => [name, t.int({ description: `${QUOTA_DESCRIPTIONS[name]} Absent: unchanged. Null: unlimited.` })])),
    billingDay: t.int({ description: 'Day of the month (1-28) traffic billing periods start on. Absent: unchanged. Null: calendar months.' }),
  }),
});

const CreateApiTokenInput = builder.inputType('CreateApiTokenInput', {
  description: 'A new API token.',
  fields: (t) => ({
    userId: t.id({ description: 'The owner (admins only may name another user). Default: the caller.' }),
    name: t.string({ required: true, description: 'A label, 1-64 letters, digits, space, ".", "_" or "-", e.g. "billing".' }),
    scope: t.field({
      type: TokenScopeEnum,
      defaultValue: 'user',
      description: 'Default USER. ADMIN needs an admin user; ADMIN and AGENT only an admin may create.',
    }),
    hostId: t.id({ description: 'Required for AGENT tokens: the host the agent manages.' }),
  }),
});

const RevokeApiTokenInput = builder.inputType('RevokeApiTokenInput', {
  description: 'Which token to revoke.',
  fields: (t) => ({ tokenId: t.id({ required: true, description: 'The token id (ApiToken.id), not its secret.' }) }),
});

const CreatedToken = builder.objectRef<{ token: ApiToken; secret: string }>('CreatedApiToken').implement({
  description: 'A new token and its secret; send the secret as `Authorization: Bearer <secret>`.',
  fields: (t) => ({
    token: t.field({ type: ApiTokenRef, description: 'The token as listed from now on.', resolve: (c) => c.token }),
    secret: t.exposeString('secret', { description: 'The bearer secret. It is not stored and cannot be shown again.' }),
  }),
});

builder.mutationFields((t) => ({
  createUser: t.field({
    type: UserRef,
    description: 'Creates a user (admin only). CONFLICT when the name is taken.',
    args: { input: t.arg({ type: CreateUserInput, required: true, description: 'The user.' }) },
    errors: resultOf('CreateUser', 'user', [ValidationError, ForbiddenError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.createUser(requireActor(ctx), { ...input, role: input.role ?? 'user' }),
  }),
  updateUserQuotas: t.field({
    type: UserRef,
    description: 'Changes quotas (admin only). Existing allocations above a lowered quota are kept; new ones are refused.',
    args: { input: t.arg({ type: UpdateUserQuotasInput, required: true, description: 'The user and the quotas to change.' }) },
    errors: resultOf('UpdateUserQuotas', 'user', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.updateQuotas(requireActor(ctx), input),
  }),
  createApiToken: t.field({
    type: CreatedToken,
    description: 'Creates a token. Users create USER tokens for themselves; admins any scope for anyone.',
    args: { input: t.arg({ type: CreateApiTokenInput, required: true, description: 'The token.' }) },
    errors: resultOf('CreateApiToken', 'created', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.createToken(requireActor(ctx), { ...input, scope: input.scope ?? 'user' }),
  }),
  revokeApiToken: t.field({
    type: ApiTokenRef,
    description: 'Revokes a token at once (its open connections and subscriptions close); succeeds when already revoked. Users revoke their own, admins any.',
    args: { input: t.arg({ type: RevokeApiTokenInput, required: true, description: 'The token.' }) },
    errors: resultOf('RevokeApiToken', 'token', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.revokeToken(requireActor(ctx), input.tokenId),
  }),
}));
