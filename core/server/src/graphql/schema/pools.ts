/** IP pools, reservations and addresses. */
import {
  AddressInUseError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PoolExhaustedError,
  QuotaExceededError,
  ValidationError,
} from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
import type { Allocation, Pool } from '../../services/pool-service.js';
import type { IpFamily } from '../../net/ip.js';
import { HostRef } from './hosts.js';
import { resultOf } from './mutation-result.js';

export const AddressFamilyEnum = builder.enumType('AddressFamily', {
  values: { IPV4: { value: 4 }, IPV6: { value: 6 } } as const,
});

const PoolKindEnum = builder.enumType('PoolKind', {
  description: 'PUBLIC: bound to a bridged network. PRIVATE: bound to a NAT network.',
  values: { PUBLIC: { value: 'public' }, PRIVATE: { value: 'private' } } as const,
});

const AddressKindEnum = builder.enumType('AddressKind', {
  description: 'ALLOCATED: held by a NIC. RESERVED: excluded by an operator. SYSTEM: network, broadcast or gateway address.',
  values: { ALLOCATED: { value: 'allocated' }, RESERVED: { value: 'reserved' }, SYSTEM: { value: 'system' } } as const,
});

export const IpPoolRef = builder.objectRef<Pool>('IpPool');
export const IpAddressRef = builder.objectRef<Allocation>('IpAddress');

const PoolUtilisationRef = builder.objectRef<{ size: bigint; allocated: bigint; reserved: bigint; free: bigint }>('PoolUtilisation').implement({
  description: 'Counts of slots: addresses, or delegated prefixes for prefix pools.',
  fields: (t) => ({
    size: t.expose('size', { type: 'BigInt' }),
    allocated: t.expose('allocated', { type: 'BigInt' }),
    reserved: t.expose('reserved', { type: 'BigInt', description: 'Operator and system reservations.' }),
    free: t.expose('free', { type: 'BigInt' }),
  }),
});

IpPoolRef.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    kind: t.field({ type: PoolKindEnum, resolve: (p) => p.kind }),
    network: t.exposeString('network', { description: 'Bridge or network name the pool is bound to.' }),
    family: t.field({ type: AddressFamilyEnum, resolve: (p) => p.family as IpFamily }),
    subnet: t.exposeString('subnet'),
    rangeStart: t.exposeString('rangeStart'),
    rangeEnd: t.exposeString('rangeEnd'),
    gateway: t.exposeString('gateway', { nullable: true }),
    dns: t.exposeStringList('dns'),
    delegatedPrefixLength: t.exposeInt('delegatedPrefixLength', { nullable: true, description: 'IPv6 prefix pools: the length of each handed-out prefix.' }),
    host: t.field({
      type: HostRef,
      nullable: true,
      description: 'Null: a global pool.',
      resolve: (p, _a, ctx) => (p.hostId ? ctx.services.hosts.get(requireActor(ctx), p.hostId) : null),
    }),
    utilisation: t.field({ type: PoolUtilisationRef, resolve: (p, _a, ctx) => ctx.services.pools.utilisation(p) }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    entries: t.connection({
      type: IpAddressRef,
      description: 'Taken slots in address order (admin only).',
      args: { kinds: t.arg({ type: [AddressKindEnum], required: false }) },
      complexity: connectionComplexity,
      resolve: async (p, args, ctx) => {
        const page = pageOf(args);
        return connectionOf(await ctx.services.pools.entries(requireActor(ctx), p.id, args.kinds ?? null, page), page);
      },
    }),
  }),
});

IpAddressRef.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    address: t.exposeString('address', { description: 'The address, or the first address of a delegated prefix.' }),
    prefixLength: t.exposeInt('prefixLength', { description: 'Size of what is held: 32/128 for one address, less for a delegated prefix.' }),
    cidr: t.string({
      description: "Interface form: the address with its subnet's prefix length (10.0.0.5/24), or the delegated prefix (2001:db8:0:1::/64).",
      resolve: async (a, _x, ctx) => {
        const single = a.prefixLength === 32 || a.prefixLength === 128;
        const pool = single ? await ctx.loaders.pool.load(a.poolId) : undefined;
        return `${a.address}/${pool ? pool.subnet.split('/')[1] : a.prefixLength}`;
      },
    }),
    gateway: t.string({
      nullable: true,
      description: "The pool's gateway.",
      resolve: async (a, _x, ctx) => (await ctx.loaders.pool.load(a.poolId))?.gateway ?? null,
    }),
    kind: t.field({ type: AddressKindEnum, resolve: (a) => a.kind }),
    note: t.exposeString('note'),
    pool: t.field({ type: IpPoolRef, resolve: async (a, _x, ctx) => (await ctx.loaders.pool.load(a.poolId))! }),
    nicId: t.exposeID('nicId', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.queryFields((t) => ({
  ipPool: t.field({
    type: IpPoolRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.pools.get(requireActor(ctx), args.id),
  }),
  ipPools: t.connection({
    type: IpPoolRef,
    args: { network: t.arg.string({ required: false }) },
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      return connectionOf(await ctx.services.pools.list(requireActor(ctx), { network: args.network }, page), page);
    },
  }),
}));

const CreateIpPoolInput = builder.inputType('CreateIpPoolInput', {
  description: 'Give `cidr` (optionally narrowed by `start`/`end`), or `start`, `end` and `netmask` (IPv4) or `prefixLength`.',
  fields: (t) => ({
    name: t.string({ required: true }),
    kind: t.field({ type: PoolKindEnum, required: true }),
    network: t.string({ required: true, description: 'Bridge or network name, e.g. br-nat.' }),
    cidr: t.string({ description: 'Subnet, e.g. 10.0.0.0/24 or 2001:db8:1::/64.' }),
    start: t.string(),
    end: t.string(),
    netmask: t.string({ description: 'IPv4 only, e.g. 255.255.255.0.' }),
    prefixLength: t.int(),
    gateway: t.string({ description: 'Reserved automatically when inside the range.' }),
    dns: t.stringList(),
    hostId: t.id({ description: 'Scope the pool to one host; absent: a global pool.' }),
    delegatedPrefixLength: t.int({ description: 'IPv6 only: hand out prefixes of this length (e.g. 64) instead of single addresses.' }),
  }),
});

const UpdateIpPoolInput = builder.inputType('UpdateIpPoolInput', {
  fields: (t) => ({
    poolId: t.id({ required: true }),
    name: t.string(),
    kind: t.field({ type: PoolKindEnum }),
    dns: t.stringList({ description: 'Replaces the list.' }),
  }),
});

const DeleteIpPoolInput = builder.inputType('DeleteIpPoolInput', { fields: (t) => ({ poolId: t.id({ required: true }) }) });

const ReserveAddressInput = builder.inputType('ReserveAddressInput', {
  fields: (t) => ({
    poolId: t.id({ required: true }),
    address: t.string({ required: true }),
    note: t.string({ description: 'e.g. "Switch".' }),
  }),
});

const UnreserveAddressInput = builder.inputType('UnreserveAddressInput', { fields: (t) => ({ reservationId: t.id({ required: true }) }) });

const AllocateAddressInput = builder.inputType('AllocateAddressInput', {
  fields: (t) => ({
    nicId: t.id({ required: true }),
    poolId: t.id({ description: "Default: the pools of the NIC's network, host-scoped first." }),
    family: t.field({ type: AddressFamilyEnum, description: 'Default IPV4 (ignored when poolId is given).' }),
    idempotencyKey: t.string({ description: 'Retrying with the same key returns the first allocation.' }),
  }),
});

const AssignAddressInput = builder.inputType('AssignAddressInput', {
  fields: (t) => ({
    nicId: t.id({ required: true }),
    address: t.string({ required: true, description: "Must lie in a pool of the NIC's network and be free." }),
    poolId: t.id(),
  }),
});

const ReleaseAddressInput = builder.inputType('ReleaseAddressInput', { fields: (t) => ({ addressId: t.id({ required: true }) }) });

builder.mutationFields((t) => ({
  createIpPool: t.field({
    type: IpPoolRef,
    description: 'Creates a pool (admin only). Network, broadcast and gateway addresses are reserved automatically.',
    args: { input: t.arg({ type: CreateIpPoolInput, required: true }) },
    errors: resultOf('CreateIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.create(requireActor(ctx), input),
  }),
  updateIpPool: t.field({
    type: IpPoolRef,
    args: { input: t.arg({ type: UpdateIpPoolInput, required: true }) },
    errors: resultOf('UpdateIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.update(requireActor(ctx), input),
  }),
  deleteIpPool: t.field({
    type: IpPoolRef,
    description: 'Deletes a pool with no allocated addresses (admin only).',
    args: { input: t.arg({ type: DeleteIpPoolInput, required: true }) },
    errors: resultOf('DeleteIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.delete(requireActor(ctx), input.poolId),
  }),
  reserveAddress: t.field({
    type: IpAddressRef,
    description: 'Excludes an address from allocation (admin only).',
    args: { input: t.arg({ type: ReserveAddressInput, required: true }) },
    errors: resultOf('ReserveAddress', 'address', [ValidationError, ForbiddenError, NotFoundError, AddressInUseError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.reserve(requireActor(ctx), input),
  }),
  unreserveAddress: t.field({
    type: IpAddressRef,
    args: { input: t.arg({ type: UnreserveAddressInput, required: true }) },
    errors: resultOf('UnreserveAddress', 'address', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.unreserve(requireActor(ctx), input.reservationId),
  }),
  allocateAddress: t.field({
    type: IpAddressRef,
    description: 'Allocates the lowest free address for a NIC.',
    args: { input: t.arg({ type: AllocateAddressInput, required: true }) },
    errors: resultOf('AllocateAddress', 'address', [ValidationError, NotFoundError, ConflictError, QuotaExceededError, PoolExhaustedError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.allocate(requireActor(ctx), input),
  }),
  assignAddress: t.field({
    type: IpAddressRef,
    description: 'Assigns a chosen address to a NIC.',
    args: { input: t.arg({ type: AssignAddressInput, required: true }) },
    errors: resultOf('AssignAddress', 'address', [ValidationError, NotFoundError, QuotaExceededError, AddressInUseError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.assign(requireActor(ctx), input),
  }),
  releaseAddress: t.field({
    type: IpAddressRef,
    description: 'Returns an address to its pool.',
    args: { input: t.arg({ type: ReleaseAddressInput, required: true }) },
    errors: resultOf('ReleaseAddress', 'address', [ValidationError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.release(requireActor(ctx), input.addressId),
  }),
}));
