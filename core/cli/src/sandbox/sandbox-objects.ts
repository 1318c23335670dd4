/**
 * The sandbox's objects in the database: a LINUX host, a pool scoped to it, two instances with one
 * NIC each, and an AGENT token for the in-process agent. Found by name when they exist (the data
 * directory persists), created when they do not; done through the services, so every change is
 * validated and audited like an API call.
 */
import { and, asc, eq, isNull } from 'drizzle-orm';
import {
  DatabaseToken,
  HostService,
  InstanceService,
  PoolService,
  PortForwardService,
  UserService,
  newId,
  systemActor,
  tables,
  type Actor,
  type Controller,
  type Database,
} from '@gatehouse/server';
import { SandboxUnavailableError } from './sandbox-network.js';
import { instanceNetns, type SandboxLayout } from './sandbox-layout.js';

/** A demo instance as the walkthrough shows it. */
export interface SandboxInstance {
  id: string;
  name: string;
  netns: string;
  /** Its first IPv4 address on the sandbox network. */
  address: string;
}

/** A forward that already exists on the sandbox host. */
export interface SandboxForward {
  instanceName: string;
  protocol: string;
  hostPortStart: number;
  hostPortEnd: number;
  targetAddress: string;
  targetPortStart: number;
}

/** What `ensureSandboxObjects` found or made. */
export interface SandboxObjects {
  hostId: string;
  instances: SandboxInstance[];
  forwards: SandboxForward[];
  /** A fresh AGENT token for the sandbox host; earlier sandbox tokens are revoked. Never printed. */
  agentSecret: string;
}

/** Finds or creates the sandbox host, pool, instances and a new agent token. */
export async function ensureSandboxObjects(container: Controller['container'], layout: SandboxLayout): Promise<SandboxObjects> {
  const { apiTokens, hosts, instances, ipPools, users } = tables;
  const db = container.resolve<Database>(DatabaseToken);
  const [admin] = await db.select().from(users).where(eq(users.role, 'admin')).orderBy(asc(users.createdAt)).limit(1);
  if (!admin) throw new SandboxUnavailableError('there is no admin user to own the sandbox instances');
  // the controller acts on its own, in the name of the first admin (who owns the instances)
  const actor: Actor = { ...systemActor(newId()), userId: admin.id, userName: admin.name };

  const hostService = container.resolve(HostService);
  let [host] = await db.select().from(hosts).where(eq(hosts.name, layout.hostName));
  if (host && host.backend !== 'linux')
    throw new SandboxUnavailableError(
      `a host named "${layout.hostName}" exists with backend ${host.backend.toUpperCase()}; the sandbox needs it to be LINUX (rename it)`,
    );
  if (!host) {
    host = await hostService.create(actor, { name: layout.hostName, backend: 'linux', publicAddresses: [layout.publicAddress] });
  } else if (!host.publicAddresses.includes(layout.publicAddress)) {
    host = await hostService.update(actor, { hostId: host.id, publicAddresses: [layout.publicAddress, ...host.publicAddresses] });
  }

  const [pool] = await db.select().from(ipPools).where(eq(ipPools.name, layout.pool.name));
  if (pool && pool.network !== layout.network)
    throw new SandboxUnavailableError(
      `an IP pool named "${layout.pool.name}" exists on network ${pool.network}; the sandbox needs it on ${layout.network} (rename it)`,
    );
  if (!pool) {
    await container.resolve(PoolService).create(actor, {
      name: layout.pool.name,
      kind: 'private',
      network: layout.network,
      cidr: layout.pool.cidr,
      start: layout.pool.start,
      end: layout.pool.end,
      gateway: layout.pool.gateway,
      hostId: host.id,
    });
  }

  const instanceService = container.resolve(InstanceService);
  const pools = container.resolve(PoolService);
  const demo: SandboxInstance[] = [];
  for (const name of layout.instances) {
    const netns = instanceNetns(layout, name);
    let [instance] = await db
      .select()
      .from(instances)
      .where(and(eq(instances.hostId, host.id), eq(instances.name, name)));
    if (!instance) {
      instance = await instanceService.create(actor, { hostId: host.id, name, externalId: netns, ownerId: admin.id, nics: [{ network: layout.network }] });
    }
    let address = await firstIpv4(instanceService, pools, instance.id, layout.network);
    if (!address) {
      // someone removed its NIC: give it one again
      await instanceService.addNic(actor, { instanceId: instance.id, network: layout.network });
      address = await firstIpv4(instanceService, pools, instance.id, layout.network);
    }
    if (!address) throw new SandboxUnavailableError(`instance ${name} of the sandbox has no IPv4 address on ${layout.network}`);
    demo.push({ id: instance.id, name, netns: instance.externalId ?? netns, address });
  }

  const forwards = (await container.resolve(PortForwardService).list(actor, { hostId: host.id }, { limit: 100 })).map((f) => ({
    instanceName: demo.find((i) => i.id === f.instanceId)?.name ?? f.instanceId,
    protocol: f.protocol,
    hostPortStart: f.hostPortStart,
    hostPortEnd: f.hostPortEnd,
    targetAddress: f.targetAddress,
    targetPortStart: f.targetPortStart,
  }));

  const userService = container.resolve(UserService);
  const previous = await db
    .select({ id: apiTokens.id })
    .from(apiTokens)
    .where(and(eq(apiTokens.hostId, host.id), eq(apiTokens.name, layout.tokenName), isNull(apiTokens.revokedAt)));
  for (const token of previous) await userService.revokeToken(actor, token.id);
  const { secret } = await userService.createToken(actor, { userId: admin.id, name: layout.tokenName, scope: 'agent', hostId: host.id });

  return { hostId: host.id, instances: demo, forwards, agentSecret: secret };
}

async function firstIpv4(instanceService: InstanceService, pools: PoolService, instanceId: string, network: string): Promise<string | undefined> {
  const nics = (await instanceService.nicsOf([instanceId])).filter((n) => n.network === network);
  const addresses = await pools.addressesOfNics(nics.map((n) => n.id));
  return addresses.find((a) => !a.address.includes(':'))?.address;
}
