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
import { connectionComplexity, connectionOf, pageOf, pageTypes } from '../pagination.js';
import type { Allocation, Pool } from '../../services/pool-service.js';
import type { IpFamily } from '../../net/ip.js';
import { HostRef } from './hosts.js';
import { resultOf } from './mutation-result.js';

export const AddressFamilyEnum = builder.enumType('AddressFamily', {
  description: 'An IP version.',
  values: { IPV4: { value: 4, description: 'IPv4.' }, IPV6: { value: 6, description: 'IPv6.' } } as const,
});

const PoolKindEnum = builder.enumType('PoolKind', {
  description: 'PUBLIC: bound to a bridged network. PRIVATE: bound to a NAT network.',
  values: {
    PUBLIC: { value: 'public', description: 'Addresses reachable from outside, on a bridged network.' },
    PRIVATE: { value: 'private', description: 'Addresses behind the host, on a NAT network; reached through port forwards and web proxies.' },
  } as const,
});

const AddressKindEnum = builder.enumType('AddressKind', {
  description: 'ALLOCATED: held by a NIC. RESERVED: excluded by an operator. SYSTEM: network, broadcast or gateway address.',
  values: {
    ALLOCATED: { value: 'allocated', description: 'Held by a NIC.' },
    RESERVED: { value: 'reserved', description: 'Excluded by an operator (reserveAddress).' },
    SYSTEM: { value: 'system', description: 'The network, broadcast or gateway address, reserved when the pool was created; it cannot be unreserved.' },
  } as const,
});

export const IpPoolRef = builder.objectRef<Pool>('IpPool');
export const IpAddressRef = builder.objectRef<Allocation>('IpAddress');

const PoolUtilisationRef = builder.objectRef<{ size: bigint; allocated: bigint; reserved: bigint; free: bigint }>('PoolUtilisation').implement({
  description: 'Counts of slots: addresses, or delegated prefixes for prefix pools.',
  fields: (t) => ({
    size: t.expose('size', { type: 'BigInt', description: 'Slots in the range, start to end.' }),
    allocated: t.expose('allocated', { type: 'BigInt', description: 'Slots held by NICs.' }),
    reserved: t.expose('reserved', { type: 'BigInt', description: 'Operator and system reservations.' }),
    free: t.expose('free', { type: 'BigInt', description: 'Slots left to hand out: size - allocated - reserved.' }),
  }),
});

IpPoolRef.implement({
  description: 'A range of addresses (or IPv6 prefixes) on one network, from which NICs on that network get theirs.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The pool id.' }),
    name: t.exposeString('name', { description: 'Unique among pools.' }),
    kind: t.field({ type: PoolKindEnum, description: 'PUBLIC or PRIVATE.', resolve: (p) => p.kind }),
    network: t.exposeString('network', { description: 'Bridge or network name the pool is bound to.' }),
    family: t.field({ type: AddressFamilyEnum, description: 'IPV4 or IPV6.', resolve: (p) => p.family as IpFamily }),
    subnet: t.exposeString('subnet', { description: 'The subnet in CIDR form, e.g. "10.0.0.0/24".' }),
    rangeStart: t.exposeString('rangeStart', { description: 'First address of the range, e.g. "10.0.0.0" (system addresses in it are never handed out).' }),
    rangeEnd: t.exposeString('rangeEnd', { description: 'Last address of the range (inclusive).' }),
    gateway: t.exposeString('gateway', { nullable: true, description: "The network's gateway, reserved in the pool; null: none." }),
    dns: t.exposeStringList('dns', { description: 'DNS servers for the NICs, e.g. ["1.1.1.1"].' }),
    delegatedPrefixLength: t.exposeInt('delegatedPrefixLength', { nullable: true, description: 'IPv6 prefix pools: the length of each handed-out prefix.' }),
    host: t.field({
      type: HostRef,
      nullable: true,
      description: 'Null: a global pool.',
      resolve: (p, _a, ctx) => (p.hostId ? ctx.services.hosts.get(requireActor(ctx), p.hostId) : null),
    }),
    utilisation: t.field({
      type: PoolUtilisationRef,
      description: 'How many slots are taken and free.',
      resolve: (p, _a, ctx) => ctx.services.pools.utilisation(p),
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the pool was created.' }),
    entries: t.connection(
      {
        type: IpAddressRef,
        description: 'Taken slots in address order (admin only).',
        args: { kinds: t.arg({ type: [AddressKindEnum], required: false, description: 'Only these kinds. Absent: all.' }) },
        complexity: connectionComplexity,
        resolve: async (p, args, ctx) => {
          const page = pageOf(args);
          return connectionOf(await ctx.services.pools.entries(requireActor(ctx), p.id, args.kinds ?? null, page), page);
        },
      },
      ...pageTypes('taken addresses of a pool'),
    ),
  }),
});

IpAddressRef.implement({
  description: 'An address or delegated prefix taken from a pool: allocated to a NIC, reserved, or a system address.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The id of this allocation or reservation (releaseAddress and unreserveAddress take it).' }),
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
    kind: t.field({ type: AddressKindEnum, description: 'ALLOCATED, RESERVED or SYSTEM.', resolve: (a) => a.kind }),
    note: t.exposeString('note', {
      description: 'Why it is reserved, e.g. "Switch" or "gateway" (or the note reserveAddress gave the gateway); empty for most allocations.',
    }),
    pool: t.field({ type: IpPoolRef, description: 'The pool it belongs to.', resolve: async (a, _x, ctx) => (await ctx.loaders.pool.load(a.poolId))! }),
    nicId: t.exposeID('nicId', { nullable: true, description: 'The NIC holding it (ALLOCATED); null for reservations.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was taken.' }),
  }),
});

builder.queryFields((t) => ({
  ipPool: t.field({
    type: IpPoolRef,
    nullable: true,
    description: 'A pool by id; null when there is none.',
    args: { id: t.arg.id({ required: true, description: 'The pool id.' }) },
    resolve: (_r, args, ctx) => ctx.services.pools.get(requireActor(ctx), args.id),
  }),
  ipPools: t.connection(
    {
      type: IpPoolRef,
      description: 'IP pools, oldest first.',
      args: { network: t.arg.string({ required: false, description: 'Only pools on this bridge or network, e.g. "br-nat".' }) },
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        return connectionOf(await ctx.services.pools.list(requireActor(ctx), { network: args.network }, page), page);
      },
    },
    ...pageTypes('IP pools'),
  ),
}));

const CreateIpPoolInput = builder.inputType('CreateIpPoolInput', {
  description: 'Give `cidr` (optionally narrowed by `start`/`end`), or `start`, `end` and `netmask` (IPv4) or `prefixLength`.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Unique among pools (CONFLICT otherwise): 1-64 letters, digits, space, ".", "_" or "-".' }),
    kind: t.field({ type: PoolKindEnum, required: true, description: 'PUBLIC or PRIVATE.' }),
    network: t.string({ required: true, description: 'Bridge or network name, e.g. br-nat.' }),
    cidr: t.string({ description: 'Subnet, e.g. 10.0.0.0/24 or 2001:db8:1::/64.' }),
    start: t.string({ description: 'First address of the range, e.g. 10.0.0.10. Default: the start of cidr.' }),
    end: t.string({ description: 'Last address of the range (inclusive). Default: the end of cidr.' }),
    netmask: t.string({ description: 'IPv4 only, e.g. 255.255.255.0.' }),
    prefixLength: t.int({ description: 'Subnet prefix length with start and end and no cidr: 0-32 (IPv4) or 0-128 (IPv6).' }),
    gateway: t.string({ description: 'Reserved automatically when inside the range.' }),
    dns: t.stringList({ description: 'Up to 8 DNS servers, e.g. ["1.1.1.1", "2606:4700:4700::1111"].' }),
    hostId: t.id({ description: 'Scope the pool to one host; absent: a global pool.' }),
    delegatedPrefixLength: t.int({ description: 'IPv6 only: hand out prefixes of this length (e.g. 64) instead of single addresses.' }),
  }),
});

const UpdateIpPoolInput = builder.inputType('UpdateIpPoolInput', {
  description: 'Absent fields keep their value; the range cannot change (create another pool).',
  fields: (t) => ({
    poolId: t.id({ required: true, description: 'The pool.' }),
    name: t.string({ description: 'New name, unique among pools.' }),
    kind: t.field({ type: PoolKindEnum, description: 'PUBLIC or PRIVATE.' }),
    dns: t.stringList({ description: 'Replaces the list.' }),
  }),
});

const DeleteIpPoolInput = builder.inputType('DeleteIpPoolInput', {
  description: 'Which pool to delete.',
  fields: (t) => ({ poolId: t.id({ required: true, description: 'The pool; it must have no allocated addresses.' }) }),
});

const ReserveAddressInput = builder.inputType('ReserveAddressInput', {
  description: 'An address to keep out of allocation.',
  fields: (t) => ({
    poolId: t.id({ required: true, description: 'The pool.' }),
    address: t.string({
      required: true,
      description: 'An address in the pool, e.g. "10.0.0.2"; ADDRESS_IN_USE when taken (except the pool\'s gateway, which takes the note).',
    }),
    note: t.string({ description: 'e.g. "Switch".' }),
  }),
});

const UnreserveAddressInput = builder.inputType('UnreserveAddressInput', {
  description: 'Which reservation to remove.',
  fields: (t) => ({ reservationId: t.id({ required: true, description: 'The IpAddress.id of a RESERVED entry (SYSTEM ones cannot be removed).' }) }),
});

const AllocateAddressInput = builder.inputType('AllocateAddressInput', {
  description: 'A NIC that needs one more address.',
  fields: (t) => ({
    nicId: t.id({ required: true, description: 'The NIC.' }),
    poolId: t.id({ description: "Default: the pools of the NIC's network, host-scoped first." }),
    family: t.field({ type: AddressFamilyEnum, description: 'Default IPV4 (ignored when poolId is given).' }),
    idempotencyKey: t.string({ description: 'Retrying with the same key returns the first allocation.' }),
  }),
});

const AssignAddressInput = builder.inputType('AssignAddressInput', {
  description: 'A chosen address for a NIC.',
  fields: (t) => ({
    nicId: t.id({ required: true, description: 'The NIC.' }),
    address: t.string({ required: true, description: 'Must lie in a pool of the NIC\'s network and be free, e.g. "10.0.0.5"; ADDRESS_IN_USE when taken.' }),
    poolId: t.id({ description: 'The pool the address is in. Default: found from the address.' }),
  }),
});

const ReleaseAddressInput = builder.inputType('ReleaseAddressInput', {
  description: 'Which allocation to return.',
  fields: (t) => ({ addressId: t.id({ required: true, description: 'The IpAddress.id of an ALLOCATED entry.' }) }),
});

builder.mutationFields((t) => ({
  createIpPool: t.field({
    type: IpPoolRef,
    description:
      'Creates a pool (admin only). Network, broadcast and gateway addresses are reserved automatically. CONFLICT when the name is taken or the range overlaps another pool on the network.',
    args: { input: t.arg({ type: CreateIpPoolInput, required: true, description: 'The pool.' }) },
    errors: resultOf('CreateIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.create(requireActor(ctx), input),
  }),
  updateIpPool: t.field({
    type: IpPoolRef,
    description: 'Renames a pool, or changes its kind or DNS servers (admin only).',
    args: { input: t.arg({ type: UpdateIpPoolInput, required: true, description: 'The pool and the fields to change.' }) },
    errors: resultOf('UpdateIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.update(requireActor(ctx), input),
  }),
  deleteIpPool: t.field({
    type: IpPoolRef,
    description: 'Deletes a pool with no allocated addresses (admin only); CONFLICT while any is allocated.',
    args: { input: t.arg({ type: DeleteIpPoolInput, required: true, description: 'The pool.' }) },
    errors: resultOf('DeleteIpPool', 'pool', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.delete(requireActor(ctx), input.poolId),
  }),
  reserveAddress: t.field({
    type: IpAddressRef,
    description:
      "Excludes an address from allocation (admin only). The pool's gateway is excluded already: reserving it succeeds, answers its SYSTEM entry and sets the note (e.g. \"Gateway\").",
    args: { input: t.arg({ type: ReserveAddressInput, required: true, description: 'The pool and address.' }) },
    errors: resultOf('ReserveAddress', 'address', [ValidationError, ForbiddenError, NotFoundError, AddressInUseError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.reserve(requireActor(ctx), input),
  }),
  unreserveAddress: t.field({
    type: IpAddressRef,
    description: 'Makes a reserved address allocatable again (admin only); CONFLICT for SYSTEM addresses.',
    args: { input: t.arg({ type: UnreserveAddressInput, required: true, description: 'The reservation.' }) },
    errors: resultOf('UnreserveAddress', 'address', [ValidationError, ForbiddenError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.unreserve(requireActor(ctx), input.reservationId),
  }),
  allocateAddress: t.field({
    type: IpAddressRef,
    description: "Allocates the lowest free address for a NIC. POOL_EXHAUSTED when none is left; QUOTA_EXCEEDED beyond the owner's quota.",
    args: { input: t.arg({ type: AllocateAddressInput, required: true, description: 'The NIC and where to allocate from.' }) },
    errors: resultOf('AllocateAddress', 'address', [ValidationError, NotFoundError, ConflictError, QuotaExceededError, PoolExhaustedError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.allocate(requireActor(ctx), input),
  }),
  assignAddress: t.field({
    type: IpAddressRef,
    description: 'Assigns a chosen address to a NIC.',
    args: { input: t.arg({ type: AssignAddressInput, required: true, description: 'The NIC and the address.' }) },
    errors: resultOf('AssignAddress', 'address', [ValidationError, NotFoundError, QuotaExceededError, AddressInUseError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.assign(requireActor(ctx), input),
  }),
  releaseAddress: t.field({
    type: IpAddressRef,
    description: 'Returns an address to its pool; CONFLICT while a port forward or web proxy targets it.',
    args: { input: t.arg({ type: ReleaseAddressInput, required: true, description: 'The allocation.' }) },
    errors: resultOf('ReleaseAddress', 'address', [ValidationError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.pools.release(requireActor(ctx), input.addressId),
  }),
}));
