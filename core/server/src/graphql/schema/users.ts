/** Users, API tokens and quotas. */
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
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
  values: { ADMIN: { value: 'admin' }, USER: { value: 'user' } } as const,
});

const TokenScopeEnum = builder.enumType('TokenScope', {
  description: "ADMIN: everything (admin users only). USER: the owner's own objects. AGENT: a host agent.",
  values: { ADMIN: { value: 'admin' }, USER: { value: 'user' }, AGENT: { value: 'agent' } } as const,
});

export const UserRef = builder.objectRef<User>('User');
const ApiTokenRef = builder.objectRef<ApiToken>('ApiToken');

ApiTokenRef.implement({
  description: 'An API token. The secret is shown only once, in CreateApiTokenPayload.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    scope: t.field({ type: TokenScopeEnum, resolve: (tok) => tok.scope }),
    prefix: t.exposeString('prefix', { description: 'The first characters of the secret, to recognise it.' }),
    hostId: t.exposeID('hostId', { nullable: true, description: 'AGENT tokens: the host they act for.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true, description: 'Refreshed at most once a minute.' }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true }),
  }),
});

UserRef.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    role: t.field({ type: RoleEnum, resolve: (u) => u.role }),
    ...Object.fromEntries(
      QUOTA_NAMES.map((name) => [name, t.exposeInt(name, { nullable: true, description: `${QUOTA_DESCRIPTIONS[name]} Null: unlimited.` })]),
    ),
    billingDay: t.exposeInt('billingDay', {
      nullable: true,
      description: "Day of the month (1-28, UTC) the user's traffic billing periods start on; null: calendar months.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    tokens: t.field({ type: [ApiTokenRef], resolve: (u, _a, ctx) => ctx.services.users.tokensOf(requireActor(ctx), u.id) }),
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
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.users.get(requireActor(ctx), args.id),
  }),
  users: t.connection({
    type: UserRef,
    description: 'All users (admin only).',
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      return connectionOf(await ctx.services.users.list(requireActor(ctx), page), page);
    },
  }),
}));

const CreateUserInput = builder.inputType('CreateUserInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    role: t.field({ type: RoleEnum, defaultValue: 'user' }),
    ...Object.fromEntries(QUOTA_NAMES.map((name) => [name, t.int({ description: `${QUOTA_DESCRIPTIONS[name]} Null or absent: unlimited.` })])),
  }),
});

const UpdateUserQuotasInput = builder.inputType('UpdateUserQuotasInput', {
  fields: (t) => ({
    userId: t.id({ required: true }),
    ...Object.fromEntries(QUOTA_NAMES.map((name) => [name, t.int({ description: `${QUOTA_DESCRIPTIONS[name]} Absent: unchanged. Null: unlimited.` })])),
    billingDay: t.int({ description: 'Day of the month (1-28) traffic billing periods start on. Absent: unchanged. Null: calendar months.' }),
  }),
});

const CreateApiTokenInput = builder.inputType('CreateApiTokenInput', {
  fields: (t) => ({
    userId: t.id({ description: 'Default: the caller.' }),
    name: t.string({ required: true }),
    scope: t.field({ type: TokenScopeEnum, defaultValue: 'user' }),
    hostId: t.id({ description: 'Required for AGENT tokens: the host the agent manages.' }),
  }),
});

const RevokeApiTokenInput = builder.inputType('RevokeApiTokenInput', {
  fields: (t) => ({ tokenId: t.id({ required: true }) }),
});

const CreatedToken = builder.objectRef<{ token: ApiToken; secret: string }>('CreatedApiToken').implement({
  fields: (t) => ({
    token: t.field({ type: ApiTokenRef, resolve: (c) => c.token }),
    secret: t.exposeString('secret', { description: 'The bearer secret. It is not stored and cannot be shown again.' }),
  }),
});

builder.mutationFields((t) => ({
  createUser: t.field({
    type: UserRef,
    description: 'Creates a user (admin only).',
    args: { input: t.arg({ type: CreateUserInput, required: true }) },
    errors: resultOf('CreateUser', 'user', [ValidationError, ForbiddenError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.createUser(requireActor(ctx), { ...input, role: input.role ?? 'user' }),
  }),
  updateUserQuotas: t.field({
    type: UserRef,
    description: 'Changes quotas (admin only). Existing allocations above a lowered quota are kept; new ones are refused.',
    args: { input: t.arg({ type: UpdateUserQuotasInput, required: true }) },
    errors: resultOf('UpdateUserQuotas', 'user', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.updateQuotas(requireActor(ctx), input),
  }),
  createApiToken: t.field({
    type: CreatedToken,
    description: 'Creates a token. Users create USER tokens for themselves; admins any scope for anyone.',
    args: { input: t.arg({ type: CreateApiTokenInput, required: true }) },
    errors: resultOf('CreateApiToken', 'created', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.createToken(requireActor(ctx), { ...input, scope: input.scope ?? 'user' }),
  }),
  revokeApiToken: t.field({
    type: ApiTokenRef,
    description: 'Revokes a token at once; succeeds when already revoked.',
    args: { input: t.arg({ type: RevokeApiTokenInput, required: true }) },
    errors: resultOf('RevokeApiToken', 'token', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.users.revokeToken(requireActor(ctx), input.tokenId),
  }),
}));
