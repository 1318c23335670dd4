/** Instances (VMs and containers) and their NICs. */
import {
  AddressInUseError,
  CapabilityNotSupportedError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PoolExhaustedError,
  QuotaExceededError,
  ValidationError,
} from '../../support/errors.js';
import { builder } from '../builder.js';
import { ApplyStatusEnum } from './apply-status.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
import type { Instance, Nic, NicWithAddresses } from '../../services/instance-service.js';
import { HostRef } from './hosts.js';
import { AddressFamilyEnum, IpAddressRef } from './pools.js';
import { resultOf } from './mutation-result.js';
import { UserRef } from './users.js';

export const InstanceRef = builder.objectRef<Instance>('Instance');
export const NicRef = builder.objectRef<Nic>('Nic');

NicRef.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    mac: t.exposeString('mac'),
    network: t.exposeString('network'),
    addresses: t.field({ type: [IpAddressRef], resolve: (n, _a, ctx) => ctx.loaders.addressesOfNic.load(n.id) }),
    status: t.field({ type: ApplyStatusEnum, description: "Whether the host's agent created or configured the NIC on the backend.", resolve: (n) => n.status }),
    statusError: t.exposeString('statusError', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

InstanceRef.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    externalId: t.exposeString('externalId', { nullable: true, description: "The backend's own id." }),
    host: t.field({ type: HostRef, resolve: async (i, _a, ctx) => (await ctx.services.hosts.get(requireActor(ctx), i.hostId))! }),
    owner: t.field({ type: UserRef, nullable: true, resolve: (i, _a, ctx) => ctx.services.users.get(requireActor(ctx), i.ownerId) }),
    nics: t.field({ type: [NicRef], resolve: (i, _a, ctx) => ctx.loaders.nicsOfInstance.load(i.id) }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.queryFields((t) => ({
  instance: t.field({
    type: InstanceRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => ctx.services.instances.get(requireActor(ctx), args.id),
  }),
  instances: t.connection({
    type: InstanceRef,
    description: 'Admins see all instances, users their own.',
    args: { hostId: t.arg.id({ required: false }) },
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      return connectionOf(await ctx.services.instances.list(requireActor(ctx), { hostId: args.hostId }, page), page);
    },
  }),
}));

const nicSpecFields = builder.inputType('NicSpecInput', {
  fields: (t) => ({
    network: t.string({ required: true, description: 'Bridge or network name.' }),
    name: t.string({ description: 'Default: the lowest free ethN.' }),
    mac: t.string({ description: 'Default: a random locally administered unicast MAC.' }),
    addresses: t.stringList({ description: "Addresses to assign from the network's pools." }),
    allocate: t.field({
      type: [AddressFamilyEnum],
      description: 'Families to allocate. Default when no addresses are given: each family with a pool on the network.',
    }),
  }),
});

const CreateInstanceInput = builder.inputType('CreateInstanceInput', {
  fields: (t) => ({
    hostId: t.id({ required: true }),
    name: t.string({ required: true }),
    ownerId: t.id({ description: 'Default: the caller.' }),
    externalId: t.string(),
    nics: t.field({ type: [nicSpecFields] }),
  }),
});

const DeleteInstanceInput = builder.inputType('DeleteInstanceInput', { fields: (t) => ({ instanceId: t.id({ required: true }) }) });

const AddNicInput = builder.inputType('AddNicInput', {
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    network: t.string({ required: true }),
    name: t.string(),
    mac: t.string(),
    addresses: t.stringList(),
    allocate: t.field({ type: [AddressFamilyEnum] }),
    idempotencyKey: t.string({ description: 'Retrying with the same key returns the first NIC.' }),
  }),
});

const RemoveNicInput = builder.inputType('RemoveNicInput', { fields: (t) => ({ nicId: t.id({ required: true }) }) });

const NicWithAddressesRef = builder.objectRef<NicWithAddresses>('AddedNic').implement({
  fields: (t) => ({
    nic: t.field({ type: NicRef, resolve: (n) => n.nic }),
    addresses: t.field({ type: [IpAddressRef], resolve: (n) => n.addresses }),
  }),
});

builder.mutationFields((t) => ({
  createInstance: t.field({
    type: InstanceRef,
    description: 'Registers an instance for an owner (admin only).',
    args: { input: t.arg({ type: CreateInstanceInput, required: true }) },
    errors: resultOf('CreateInstance', 'instance', [
      ValidationError,
      ForbiddenError,
      NotFoundError,
      ConflictError,
      QuotaExceededError,
      PoolExhaustedError,
      AddressInUseError,
      CapabilityNotSupportedError,
    ]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.create(requireActor(ctx), input),
  }),
  deleteInstance: t.field({
    type: InstanceRef,
    description: 'Deletes an instance and its NICs, reclaiming their addresses (admin only).',
    args: { input: t.arg({ type: DeleteInstanceInput, required: true }) },
    errors: resultOf('DeleteInstance', 'instance', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.delete(requireActor(ctx), input.instanceId),
  }),
  addNic: t.field({
    type: NicWithAddressesRef,
    description: "Adds a NIC; without addresses, allocates from the network's pools.",
    args: { input: t.arg({ type: AddNicInput, required: true }) },
    errors: resultOf('AddNic', 'added', [
      ValidationError,
      NotFoundError,
      ConflictError,
      QuotaExceededError,
      PoolExhaustedError,
      AddressInUseError,
      CapabilityNotSupportedError,
    ]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.addNic(requireActor(ctx), input),
  }),
  removeNic: t.field({
    type: NicRef,
    description: 'Removes a NIC and reclaims its addresses.',
    args: { input: t.arg({ type: RemoveNicInput, required: true }) },
    errors: resultOf('RemoveNic', 'nic', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.removeNic(requireActor(ctx), input.nicId),
  }),
}));
