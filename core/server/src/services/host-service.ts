/**
 * Hosts: the hypervisor hosts and gateways agents manage. Admins create and change them; every
 * authenticated user may read them (tenants need a host's public addresses to use it).
 */
import { asc, eq, gt } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import type { Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { hosts, instances, ipPools, users } from '../db/schema.js';
import { ConflictError, NotFoundError, ValidationError, mapUniqueViolations } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { DatabaseToken } from '../di/tokens.js';
import { parsePortRanges, validId, validName, validPort, validUnicastIp, type PortRange } from '../support/validate.js';
import { AuditService } from './audit-service.js';
import { requireAdmin } from './user-service.js';

/** A host row. */
export type Host = typeof hosts.$inferSelect;
/** A host's backend: the id of the plugin its agent runs. */
export type HostBackend = string;

/** Plugin ids: a lower-case letter, then up to 62 lower-case letters, digits or hyphens. */
export const BACKEND_ID = /^[a-z][a-z0-9-]{0,62}$/;

/** The built-in plugins; any other id that `BACKEND_ID` accepts names a third party's. */
export const BUILT_IN_BACKENDS = ['linux', 'docker', 'lxd', 'proxmox', 'esxi'] as const;

/** Checks a backend (plugin) id. */
export function validBackend(field: string, value: string): string {
  if (typeof value !== 'string' || !BACKEND_ID.test(value)) {
    throw new ValidationError(
      field,
      value,
      `is not a plugin id: a lower-case letter, then up to 62 lower-case letters, digits or "-" (built in: ${BUILT_IN_BACKENDS.join(', ')})`,
    );
  }
  return value;
}

/** Default range of host ports that may be forwarded: the non-privileged ports. */
export const DEFAULT_PORT_RANGE: PortRange = { start: 1024, end: 65535 };

/** Input of `createHost`. */
export interface CreateHostInput {
  name: string;
  backend: HostBackend;
  maxForwardPorts?: number | null;
  portRangeStart?: number | null;
  portRangeEnd?: number | null;
  reservedPorts?: readonly string[] | null;
  publicAddresses?: readonly string[] | null;
  defaultPoolId?: string | null;
  discoveryOwnerId?: string | null;
  trafficCapBps?: number | null;
}

/** Input of `updateHost`; absent fields stay as they are. */
export interface UpdateHostInput {
  hostId: string;
  name?: string | null;
  maxForwardPorts?: number | null;
  portRangeStart?: number | null;
  portRangeEnd?: number | null;
  reservedPorts?: readonly string[] | null;
  publicAddresses?: readonly string[] | null;
  defaultPoolId?: string | null;
  discoveryOwnerId?: string | null;
  trafficCapBps?: number | null;
}

/** Checks the discovery settings of a host: a pool it may use (global or its own) and an existing user. */
async function validDiscoverySettings(
  tx: Executor,
  hostId: string,
  input: { defaultPoolId?: string | null; discoveryOwnerId?: string | null },
): Promise<Pick<Host, 'defaultPoolId' | 'discoveryOwnerId'> | Partial<Pick<Host, 'defaultPoolId' | 'discoveryOwnerId'>>> {
  const out: Partial<Pick<Host, 'defaultPoolId' | 'discoveryOwnerId'>> = {};
  if (input.defaultPoolId != null) {
    const id = validId('input.defaultPoolId', input.defaultPoolId);
    const [pool] = await tx.select({ hostId: ipPools.hostId }).from(ipPools).where(eq(ipPools.id, id));
    if (!pool) throw new NotFoundError('input.defaultPoolId', id, 'IP pool');
    if (pool.hostId !== null && pool.hostId !== hostId) throw new ValidationError('input.defaultPoolId', id, 'is scoped to another host');
    out.defaultPoolId = id;
  }
  if (input.discoveryOwnerId != null) {
    const id = validId('input.discoveryOwnerId', input.discoveryOwnerId);
    const [user] = await tx.select({ id: users.id }).from(users).where(eq(users.id, id));
    if (!user) throw new NotFoundError('input.discoveryOwnerId', id, 'user');
    out.discoveryOwnerId = id;
  }
  return out;
}

function validAddresses(field: string, values: readonly string[]): string[] {
  const out = values.map((v, i) => validUnicastIp(`${field}[${i}]`, v));
  const dup = out.find((a, i) => out.indexOf(a) !== i);
  if (dup) throw new ValidationError(field, values, `lists ${dup} twice`);
  return out;
}

function nameTaken(name: unknown): ConflictError {
  return new ConflictError('input.name', name, 'is already the name of another host');
}

/** Default of `maxForwardPorts`: the widest forward a tenant may create on a host. */
export const DEFAULT_MAX_FORWARD_PORTS = 1000;

function validMaxForwardPorts(value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new ValidationError('input.maxForwardPorts', value, 'must be an integer from 1 to 65535');
  return value;
}

/** The fastest a traffic counter of a host may grow: 1 Mbit/s to 10 Tbit/s. */
function validTrafficCap(value: number): number {
  if (!Number.isInteger(value) || value < 1e6 || value > 1e13)
    throw new ValidationError('input.trafficCapBps', value, 'must be an integer from 1,000,000 to 10,000,000,000,000 (bits per second)');
  return value;
}

function validPortRange(start: number, end: number): PortRange {
  validPort('input.portRangeStart', start);
  validPort('input.portRangeEnd', end);
  if (end < start) throw new ValidationError('input.portRangeEnd', end, `is below input.portRangeStart ${start} (reversed range)`);
  return { start, end };
}

@injectable()
export class HostService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Registers a host (admin only). */
  async create(actor: Actor, input: CreateHostInput): Promise<Host> {
    requireAdmin(actor, 'createHost');
    const range = validPortRange(input.portRangeStart ?? DEFAULT_PORT_RANGE.start, input.portRangeEnd ?? DEFAULT_PORT_RANGE.end);
    const host: Host = {
      id: newId(),
      name: validName('input.name', input.name),
      backend: validBackend('input.backend', input.backend),
      driver: null,
      portRangeStart: range.start,
      portRangeEnd: range.end,
      reservedPorts: parsePortRanges('input.reservedPorts', input.reservedPorts ?? []),
      maxForwardPorts: validMaxForwardPorts(input.maxForwardPorts ?? DEFAULT_MAX_FORWARD_PORTS),
      trafficCapBps: input.trafficCapBps == null ? null : validTrafficCap(input.trafficCapBps),
      publicAddresses: validAddresses('input.publicAddresses', input.publicAddresses ?? []),
      desiredRevision: 0,
      defaultPoolId: null,
      discoveryOwnerId: null,
      createdAt: new Date(),
    };
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          Object.assign(host, await validDiscoverySettings(tx, host.id, input));
          await tx.insert(hosts).values(host);
          await record({ action: 'host.create', objectType: 'Host', objectId: host.id, after: host });
          return host;
        }),
      { hosts_name_unique: () => nameTaken(input.name) },
    );
  }

  /** Changes a host's name, port range, reserved ports or public addresses (admin only). */
  async update(actor: Actor, input: UpdateHostInput): Promise<Host> {
    requireAdmin(actor, 'updateHost');
    const id = validId('input.hostId', input.hostId);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const [before] = await tx.select().from(hosts).where(eq(hosts.id, id)).for('update');
          if (!before) throw new NotFoundError('input.hostId', id, 'host');
          const range = validPortRange(input.portRangeStart ?? before.portRangeStart, input.portRangeEnd ?? before.portRangeEnd);
          const patch: Partial<Host> = { portRangeStart: range.start, portRangeEnd: range.end };
          if (input.name != null) patch.name = validName('input.name', input.name);
          if (input.reservedPorts != null) patch.reservedPorts = parsePortRanges('input.reservedPorts', input.reservedPorts);
          if (input.maxForwardPorts != null) patch.maxForwardPorts = validMaxForwardPorts(input.maxForwardPorts);
          if (input.trafficCapBps != null) patch.trafficCapBps = validTrafficCap(input.trafficCapBps);
          if (input.publicAddresses != null) patch.publicAddresses = validAddresses('input.publicAddresses', input.publicAddresses);
          Object.assign(patch, await validDiscoverySettings(tx, id, input));
          const [after] = await tx.update(hosts).set(patch).where(eq(hosts.id, id)).returning();
          await record({ action: 'host.update', objectType: 'Host', objectId: id, before, after });
          return after!;
        }),
      { hosts_name_unique: () => nameTaken(input.name) },
    );
  }

  /** Removes a host that has no instances and no host-scoped pools left (admin only). */
  async delete(actor: Actor, hostId: string): Promise<Host> {
    requireAdmin(actor, 'deleteHost');
    const id = validId('input.hostId', hostId);
    return this.audit.transact(actor, async (tx, record) => {
      const [before] = await tx.select().from(hosts).where(eq(hosts.id, id)).for('update');
      if (!before) throw new NotFoundError('input.hostId', id, 'host');
      const [instance] = await tx.select({ id: instances.id }).from(instances).where(eq(instances.hostId, id)).limit(1);
      if (instance) throw new ConflictError('input.hostId', id, 'still has instances; delete them first');
      const [pool] = await tx.select({ id: ipPools.id }).from(ipPools).where(eq(ipPools.hostId, id)).limit(1);
      if (pool) throw new ConflictError('input.hostId', id, 'still has host-scoped IP pools; delete them first');
      await tx.delete(hosts).where(eq(hosts.id, id));
      await record({ action: 'host.delete', objectType: 'Host', objectId: id, before });
      return before;
    });
  }

  /** A host by id; an agent token sees only its own host. */
  async get(actor: Actor, id: string): Promise<Host | undefined> {
    if (actor.scope === 'agent' && actor.hostId !== id) return undefined;
    const [row] = await this.db.select().from(hosts).where(eq(hosts.id, id));
    return row;
  }

  /** Hosts in creation order. */
  async list(_actor: Actor, page: { after?: string; limit: number }): Promise<Host[]> {
    return this.db
      .select()
      .from(hosts)
      .where(page.after ? gt(hosts.id, page.after) : undefined)
      .orderBy(asc(hosts.id))
      .limit(page.limit);
  }
}
