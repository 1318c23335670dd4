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
import { isAdmin } from '../../auth/actor.js';
import { builder } from '../builder.js';
import { ApplyStatusEnum } from './apply-status.js';
import { requireActor } from '../context.js';
import { countedConnectionOf, countedPageTypes } from '../counted-connection.js';
import { connectionComplexity, pageOf } from '../pagination.js';
import type { Instance, Nic, NicWithAddresses } from '../../services/instance-service.js';
import { HostRef } from './hosts.js';
import { AddressFamilyEnum, IpAddressRef } from './pools.js';
import { resultOf } from './mutation-result.js';
import { UserRef } from './users.js';

export const InstanceRef = builder.objectRef<Instance>('Instance');
export const NicRef = builder.objectRef<Nic>('Nic');

NicRef.implement({
  description: 'A network interface of an instance, on one bridge or network, with the addresses it holds.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The NIC id.' }),
    name: t.exposeString('name', { description: 'Interface name inside the instance, e.g. "eth0"; unique per instance.' }),
    mac: t.exposeString('mac', { description: 'Lower-case, colon-separated, e.g. "52:54:00:12:34:56"; unique among NICs.' }),
    network: t.exposeString('network', { description: 'The bridge or network the NIC is on, e.g. "br-nat".' }),
    addresses: t.field({
      type: [IpAddressRef],
      description: "Addresses and delegated prefixes the NIC holds from the network's pools.",
      resolve: (n, _a, ctx) => ctx.loaders.addressesOfNic.load(n.id),
    }),
    status: t.field({ type: ApplyStatusEnum, description: "Whether the host's agent created or configured the NIC on the backend.", resolve: (n) => n.status }),
    statusError: t.exposeString('statusError', { nullable: true, description: "FAILED: the driver's error; null otherwise." }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the NIC was added.' }),
  }),
});

InstanceRef.implement({
  description: 'A VM or container on a host, owned by one user; its NICs, forwards, firewall, limits and proxies hang off it.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The instance id.' }),
    name: t.exposeString('name', { description: 'Unique on its host.' }),
    externalId: t.exposeString('externalId', { nullable: true, description: "The backend's own id." }),
    host: t.field({
      type: HostRef,
      description: 'The host the instance runs on.',
      resolve: async (i, _a, ctx) => (await ctx.services.hosts.get(requireActor(ctx), i.hostId))!,
    }),
    owner: t.field({
      type: UserRef,
      nullable: true,
      description: 'The owning user; null when the caller may not see that user.',
      resolve: (i, _a, ctx) => ctx.services.users.get(requireActor(ctx), i.ownerId),
    }),
    nics: t.field({ type: [NicRef], description: 'Its network interfaces.', resolve: (i, _a, ctx) => ctx.loaders.nicsOfInstance.load(i.id) }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the instance was registered.' }),
  }),
});

// declared here, not in pools.ts: instances.ts already imports pools.ts
builder.objectField(IpAddressRef, 'instance', (t) =>
  t.field({
    type: InstanceRef,
    nullable: true,
    description: 'The instance whose NIC holds it (ALLOCATED), with its name and owner; null for reservations and when it is not yours.',
    resolve: async (a, _x, ctx) => {
      const actor = requireActor(ctx);
      const instance = a.nicId ? await ctx.loaders.instanceOfNic.load(a.nicId) : undefined;
      return instance && (isAdmin(actor) || instance.ownerId === actor.userId) ? instance : null;
    },
  }),
);

builder.queryFields((t) => ({
  instance: t.field({
    type: InstanceRef,
    nullable: true,
    description: 'An instance by id; null when it does not exist or is not yours.',
    args: { id: t.arg.id({ required: true, description: 'The instance id.' }) },
    resolve: (_r, args, ctx) => ctx.services.instances.get(requireActor(ctx), args.id),
  }),
  instances: t.connection(
    {
      type: InstanceRef,
      description: 'Admins see all instances, users their own; oldest first.',
      args: { hostId: t.arg.id({ required: false, description: 'Only the instances on this host.' }) },
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        const actor = requireActor(ctx);
        const filter = { hostId: args.hostId };
        return countedConnectionOf(await ctx.services.instances.list(actor, filter, page), page, () => ctx.services.instances.count(actor, filter));
      },
    },
    ...countedPageTypes('instances'),
  ),
}));

const nicSpecFields = builder.inputType('NicSpecInput', {
  description: 'A NIC to create with the instance.',
  fields: (t) => ({
    network: t.string({ required: true, description: 'Bridge or network name, e.g. "br-nat" (1-64 letters, digits, ".", "_", ":" or "-").' }),
    name: t.string({ description: '1-15 lower-case letters and digits, starting with a letter. Default: the lowest free ethN.' }),
    mac: t.string({
      description: 'e.g. "52:54:00:12:34:56" (any common spelling); CONFLICT when another NIC has it. Default: a random locally administered unicast MAC.',
    }),
    addresses: t.stringList({ description: 'Addresses to assign from the network\'s pools, e.g. ["10.0.0.5"]; ADDRESS_IN_USE when taken.' }),
    allocate: t.field({
      type: [AddressFamilyEnum],
      description: 'Families to allocate. Default when no addresses are given: each family with a pool on the network.',
    }),
  }),
});

const CreateInstanceInput = builder.inputType('CreateInstanceInput', {
  description: 'A new instance and its NICs, created in one transaction.',
  fields: (t) => ({
    hostId: t.id({ required: true, description: 'The host it runs on.' }),
    name: t.string({ required: true, description: 'Unique on the host (CONFLICT otherwise): 1-64 letters, digits, space, ".", "_" or "-".' }),
    ownerId: t.id({ description: 'The owning user. Default: the caller.' }),
    externalId: t.string({ description: 'The backend\'s own id (container name, VMID): 1-64 letters, digits, space, ".", "_" or "-".' }),
    nics: t.field({ type: [nicSpecFields], description: 'At most 32 NICs. Default: none.' }),
  }),
});

const DeleteInstanceInput = builder.inputType('DeleteInstanceInput', {
  description: 'Which instance to delete.',
  fields: (t) => ({ instanceId: t.id({ required: true, description: 'The instance.' }) }),
});

const AddNicInput = builder.inputType('AddNicInput', {
  description: 'A NIC to add to an existing instance (at most 32 per instance).',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    network: t.string({ required: true, description: 'Bridge or network name, e.g. "br-nat".' }),
    name: t.string({ description: '1-15 lower-case letters and digits, starting with a letter; unique on the instance. Default: the lowest free ethN.' }),
    mac: t.string({ description: 'e.g. "52:54:00:12:34:56"; unique among NICs. Default: a random locally administered unicast MAC.' }),
    addresses: t.stringList({ description: 'Addresses to assign from the network\'s pools, e.g. ["10.0.0.5"].' }),
    allocate: t.field({
      type: [AddressFamilyEnum],
      description: 'Families to allocate the lowest free address of. Default when no addresses are given: each family with a pool on the network.',
    }),
    idempotencyKey: t.string({ description: 'Retrying with the same key returns the first NIC.' }),
  }),
});

const RemoveNicInput = builder.inputType('RemoveNicInput', {
  description: 'Which NIC to remove.',
  fields: (t) => ({ nicId: t.id({ required: true, description: 'The NIC.' }) }),
});

const NicWithAddressesRef = builder.objectRef<NicWithAddresses>('AddedNic').implement({
  description: 'A NIC just added, with the addresses it was given.',
  fields: (t) => ({
    nic: t.field({ type: NicRef, description: 'The new NIC (PENDING until the host applies it).', resolve: (n) => n.nic }),
    addresses: t.field({ type: [IpAddressRef], description: 'The addresses assigned or allocated to it.', resolve: (n) => n.addresses }),
  }),
});

builder.mutationFields((t) => ({
  createInstance: t.field({
    type: InstanceRef,
    description: 'Registers an instance for an owner (admin only). CONFLICT when the name is taken on the host.',
    args: { input: t.arg({ type: CreateInstanceInput, required: true, description: 'The instance.' }) },
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
    args: { input: t.arg({ type: DeleteInstanceInput, required: true, description: 'The instance.' }) },
    errors: resultOf('DeleteInstance', 'instance', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.delete(requireActor(ctx), input.instanceId),
  }),
  addNic: t.field({
    type: NicWithAddressesRef,
    description: "Adds a NIC; without addresses, allocates from the network's pools.",
    args: { input: t.arg({ type: AddNicInput, required: true, description: 'The NIC.' }) },
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
    args: { input: t.arg({ type: RemoveNicInput, required: true, description: 'The NIC.' }) },
    errors: resultOf('RemoveNic', 'nic', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.instances.removeNic(requireActor(ctx), input.nicId),
  }),
}));
