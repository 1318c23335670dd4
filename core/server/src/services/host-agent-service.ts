/**
 * Host agents: whether each host's agent is online, and what it last reported about itself
 * (applied revision, host-level error, version, plugin, discovered instances, drift repairs).
 *
 * Online means: the host's agent token holds an open `hostDesiredState` subscription on some
 * replica, and that subscription was seen within `offlineAfterMs`. Every such subscription is a
 * row in `host_agent_connections`: the replica serving it refreshes the row every `heartbeatMs`
 * and deletes it when the subscription ends. A crashed replica leaves its rows behind; they stop
 * counting once they age out. One row per subscription, rather than a flag or a counter on the
 * host, keeps an agent that reconnected before its old socket was noticed dead online when the
 * old one finally ends. All times come from the database clock, so replicas agree.
 *
 * Agent reports are observations, not changes made through the API: like object status reports
 * they are not audit entries. Every change is published after it commits (topic
 * `hostAgentStatus`, the host id only: receivers read the status back, so it fits in a NOTIFY).
 */
import { AGENT_START_SOURCES, type AgentStartSource, type DiscoveredInstanceInput, type ReportHostStatusInput } from '@gatehouse/agent-protocol';
import {
  checkBandwidth,
  checkFirewallRule,
  checkNics,
  checkPortForward,
  isIpv6,
  takesEveryForward,
  type CapabilityViolation,
  type DriverCapabilities,
} from '@gatehouse/sdk';
import { DiscoveryService } from './discovery-service.js';
import { and, asc, count, eq, inArray, sql } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import {
  bandwidthLimits,
  firewallRules,
  hostAgentConnections,
  hostAgents,
  hosts,
  instances,
  nics,
  portForwards,
  type DiscoveredInstanceJson,
  type HostDriverJson,
  type ListeningSocketJson,
} from '../db/schema.js';
import { validListeningSockets } from './port-audit.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../support/errors.js';
import type { EventBus } from '../events/event-bus.js';
import { newId } from '../support/ids.js';
import type { Logger } from '../support/logger.js';
import { formatIp, familyBits } from '../net/ip.js';
import { AgentPresenceToken, DatabaseToken, EventBusToken, LoggerToken, type AgentPresenceOptions } from '../di/tokens.js';
import { relay } from '../support/streams.js';
import { validId, validIp, validMac } from '../support/validate.js';
import { capabilityError } from './capability-check.js';
import { statusBatches, type ChangeObjectType, type ObjectStatusChange } from '../events/event-payloads.js';

/** Production values: refreshed every 10 s, offline 30 s after the last refresh. */
export const DEFAULT_AGENT_PRESENCE: AgentPresenceOptions = { heartbeatMs: 10_000, offlineAfterMs: 30_000 };

/** What the port audit knows of a host. */
export interface HostPortAudit {
  publicAddresses: string[];
  sockets: ListeningSocketJson[] | null;
}

/** A host agent's status as admins see it. */
export interface HostAgentStatus {
  hostId: string;
  online: boolean;
  /** Open subscriptions seen recently (more than one while a reconnected agent's old socket lingers). */
  connections: number;
  /** Start of the newest live subscription; null while offline. */
  connectedAt: Date | null;
  lastSeenAt: Date | null;
  appliedRevision: number | null;
  appliedAt: Date | null;
  lastError: string | null;
  agentVersion: string | null;
  pluginId: string | null;
  discoveredInstances: DiscoveredInstanceJson[];
  discoveredAt: Date | null;
  lastDriftAt: Date | null;
  driftRepairs: number;
  /** Where the agent's current run got its first state (its cache, before connecting, or the controller); null until reported. */
  startedFrom: AgentStartSource | null;
  /** With CACHE: the revision applied from the agent's cache at start. */
  cachedRevision: number | null;
  /** The host's listening sockets (the port audit); null until the agent reports them. */
  listeningSockets: ListeningSocketJson[] | null;
  listeningSocketsAt: Date | null;
  /** While online: milliseconds until the freshest subscription ages out, when watchers look again. */
  freshForMs: number | null;
}

export type { DiscoveredInstanceInput, ReportHostStatusInput } from '@gatehouse/agent-protocol';

/** Longest host-level error kept. */
export const MAX_AGENT_ERROR = 2000;
/** Most instances in one report. */
export const MAX_DISCOVERED_INSTANCES = 1000;
/** Most NICs of one discovered instance. */
export const MAX_DISCOVERED_NICS = 64;
/** Most addresses of one discovered NIC. */
export const MAX_DISCOVERED_ADDRESSES = 64;
/** Largest discovered-instance list stored, serialised. */
export const MAX_DISCOVERED_BYTES = 1024 * 1024;

const AGENT_VERSION = /^[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}$/;
const PLUGIN_ID = /^[A-Za-z0-9@][A-Za-z0-9@/._-]{0,127}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
// eslint-disable-next-line no-control-regex
const CONTROL_EXCEPT_WHITESPACE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/;

/** A label from a hypervisor: 1 to `max` characters, no control characters. */
function validLabel(field: string, value: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || CONTROL.test(value)) {
    throw new ValidationError(field, value, `must be 1-${max} characters without control characters`);
  }
  return value;
}

/** An address as discovered: `2001:db8::5` or `10.0.0.2/24`, returned in canonical spelling. */
function validDiscoveredAddress(field: string, value: string): string {
  if (typeof value !== 'string') throw new ValidationError(field, value, 'is not an address');
  const slash = value.indexOf('/');
  const addr = validIp(field, slash < 0 ? value : value.slice(0, slash));
  if (slash < 0) return formatIp(addr);
  const length = value.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(length) || Number(length) > familyBits(addr.family)) {
    throw new ValidationError(field, value, `has an invalid prefix length (0-${familyBits(addr.family)})`);
  }
  return `${formatIp(addr)}/${Number(length)}`;
}

const oneOf = <T extends string>(field: string, values: readonly unknown[], allowed: readonly T[]): T[] => {
  values.forEach((v, i) => {
    if (!allowed.includes(v as T)) throw new ValidationError(`${field}[${i}]`, v, `must be one of ${allowed.join(', ')}`);
  });
  return [...new Set(values as T[])];
};
const IMPLEMENTATIONS = ['native', 'dataplane'] as const;
const implementation = (field: string, value: unknown) => oneOf(field, [value], IMPLEMENTATIONS)[0]!;

/** Checks a reported driver (id, version, API version, capabilities) and returns its stored form. */
export function validDriverReport(field: string, value: NonNullable<ReportHostStatusInput['driver']>): HostDriverJson {
  if (typeof value.id !== 'string' || !PLUGIN_ID.test(value.id))
    throw new ValidationError(`${field}.id`, value.id, "must be the plugin's id (1-128 characters)");
  if (value.version != null && !AGENT_VERSION.test(value.version))
    throw new ValidationError(`${field}.version`, value.version, 'must be a version such as 1.4.0');
  if (!Number.isInteger(value.apiVersion) || value.apiVersion < 1 || value.apiVersion > 1000)
    throw new ValidationError(`${field}.apiVersion`, value.apiVersion, 'must be an integer from 1 to 1000');
  const c = value.capabilities;
  const at = `${field}.capabilities`;
  if (!Number.isInteger(c.nics.max) || c.nics.max < 0 || c.nics.max > 1024)
    throw new ValidationError(`${at}.nics.max`, c.nics.max, 'must be an integer from 0 to 1024');
  const capabilities: DriverCapabilities = {
    portForwards: c.portForwards && {
      implementation: implementation(`${at}.portForwards.implementation`, c.portForwards.implementation),
      protocols: oneOf(`${at}.portForwards.protocols`, c.portForwards.protocols, ['tcp', 'udp'] as const),
      portRanges: c.portForwards.portRanges,
      ipv6: c.portForwards.ipv6,
      sourceAllowLists: c.portForwards.sourceAllowLists,
      rateLimits: c.portForwards.rateLimits ?? false,
      multiTarget: c.portForwards.multiTarget ?? false,
    },
    firewall: c.firewall && {
      implementation: implementation(`${at}.firewall.implementation`, c.firewall.implementation),
      directions: oneOf(`${at}.firewall.directions`, c.firewall.directions, ['inbound', 'outbound'] as const),
      actions: oneOf(`${at}.firewall.actions`, c.firewall.actions, ['allow', 'reject', 'drop'] as const),
      priorities: c.firewall.priorities,
      ipv6: c.firewall.ipv6,
      icmp: c.firewall.icmp,
    },
    shaping: c.shaping && {
      implementation: implementation(`${at}.shaping.implementation`, c.shaping.implementation),
      ingress: c.shaping.ingress,
      egress: c.shaping.egress,
      burst: c.shaping.burst,
    },
    nics: { max: c.nics.max, hotplug: c.nics.hotplug, staticAddressing: c.nics.staticAddressing },
  };
  return { id: value.id, version: value.version ?? null, apiVersion: value.apiVersion, capabilities };
}

/**
 * Whether a reported driver (`validDriverReport`) is the one stored: equal as JSON values,
 * whatever the order of their keys. A jsonb column gives its keys back in its own order (shorter
 * keys first), never in the order the agent wrote them, so comparing the texts found every report
 * a new driver: each took the host's row lock and checked all the host's objects against the
 * capabilities again (`failUnsupported`), ~300 ms at 60,000 forwards, which every forward change
 * on the host then waited for.
 */
export function sameDriver(stored: HostDriverJson | null, reported: HostDriverJson): boolean {
  return stored !== null && sortedJson(stored) === sortedJson(reported);
}

/** JSON text with every object's keys in sorted order (what `undefined` leaves out is left out). */
function sortedJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** Checks a discovered-instance list and returns its stored form. */
export function validDiscoveredInstances(field: string, values: readonly DiscoveredInstanceInput[]): DiscoveredInstanceJson[] {
  if (values.length > MAX_DISCOVERED_INSTANCES) {
    throw new ValidationError(field, `${values.length} instances`, `lists more than ${MAX_DISCOVERED_INSTANCES} instances`);
  }
  const seen = new Map<string, number>();
  const out = values.map((instance, i): DiscoveredInstanceJson => {
    const at = `${field}[${i}]`;
    const externalId = validLabel(`${at}.externalId`, instance.externalId, 128);
    const first = seen.get(externalId);
    if (first !== undefined) throw new ValidationError(`${at}.externalId`, externalId, `is also the externalId of ${field}[${first}]`);
    seen.set(externalId, i);
    if (instance.nics.length > MAX_DISCOVERED_NICS) {
      throw new ValidationError(`${at}.nics`, `${instance.nics.length} NICs`, `lists more than ${MAX_DISCOVERED_NICS} NICs`);
    }
    return {
      externalId,
      name: validLabel(`${at}.name`, instance.name, 255),
      ...(typeof instance.running === 'boolean' ? { running: instance.running } : {}),
      nics: instance.nics.map((nic, j) => {
        const nicAt = `${at}.nics[${j}]`;
        if (nic.addresses.length > MAX_DISCOVERED_ADDRESSES) {
          throw new ValidationError(`${nicAt}.addresses`, `${nic.addresses.length} addresses`, `lists more than ${MAX_DISCOVERED_ADDRESSES} addresses`);
        }
        return {
          name: validLabel(`${nicAt}.name`, nic.name, 64),
          mac: nic.mac == null ? null : validMac(`${nicAt}.mac`, nic.mac),
          addresses: nic.addresses.map((a, k) => validDiscoveredAddress(`${nicAt}.addresses[${k}]`, a)),
        };
      }),
    };
  });
  const bytes = Buffer.byteLength(JSON.stringify(out));
  if (bytes > MAX_DISCOVERED_BYTES) throw new ValidationError(field, `${bytes} bytes`, `is larger than ${MAX_DISCOVERED_BYTES} bytes serialised`);
  return out;
}

/** The start source of a report, checked, as columns to set (none when the agent does not say). */
function validStart(input: ReportHostStatusInput): { startedFrom: AgentStartSource; cachedRevision: number | null } | Record<string, never> {
  if (input.startedFrom == null) return {};
  const startedFrom = input.startedFrom;
  if (!AGENT_START_SOURCES.includes(startedFrom))
    throw new ValidationError('input.startedFrom', startedFrom, `must be one of ${AGENT_START_SOURCES.join(', ')}`);
  const cached = input.cachedRevision ?? null;
  if (startedFrom === 'CACHE' && (cached === null || !Number.isInteger(cached) || cached < 0))
    throw new ValidationError('input.cachedRevision', cached, 'must be the non-negative revision applied from the cache when startedFrom is CACHE');
  if (startedFrom === 'CONTROLLER' && cached !== null) throw new ValidationError('input.cachedRevision', cached, 'must be null when startedFrom is CONTROLLER');
  return { startedFrom, cachedRevision: cached };
}

function emptyStatus(hostId: string): HostAgentStatus {
  return {
    hostId,
    online: false,
    connections: 0,
    connectedAt: null,
    lastSeenAt: null,
    appliedRevision: null,
    appliedAt: null,
    lastError: null,
    agentVersion: null,
    pluginId: null,
    discoveredInstances: [],
    discoveredAt: null,
    lastDriftAt: null,
    driftRepairs: 0,
    startedFrom: null,
    cachedRevision: null,
    listeningSockets: null,
    listeningSocketsAt: null,
    freshForMs: null,
  };
}

/** Whether the actor may see and report the agent status of the host: admins, and the host's own agent token. */
export function mayActForHostAgent(actor: Actor, hostId: string): boolean {
  return isAdmin(actor) || (actor.scope === 'agent' && actor.hostId === hostId);
}

@injectable()
export class HostAgentService {
  // presence work in flight (connect … disconnect of each tracked subscription), awaited on shutdown
  private readonly lifecycles = new Set<Promise<void>>();

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(AgentPresenceToken) private readonly presence: AgentPresenceOptions,
    @inject(LoggerToken) private readonly logger: Logger,
    @inject(DiscoveryService) private readonly discovery: DiscoveryService,
  ) {}

  /** Records an agent's report about itself; a report for an older revision than the stored one is stale and only refreshes lastSeenAt. */
  async report(actor: Actor, input: ReportHostStatusInput): Promise<HostAgentStatus> {
    const hostId = validId('input.hostId', input.hostId);
    if (!mayActForHostAgent(actor, hostId)) {
      throw new ForbiddenError(`input.hostId "${hostId}": only that host's agent token (or an admin) may report its agent status`, 'input.hostId', hostId);
    }
    const applied = input.appliedRevision ?? null;
    if (applied !== null && (!Number.isInteger(applied) || applied < 0)) {
      throw new ValidationError('input.appliedRevision', applied, 'must be a non-negative integer');
    }
    const error = input.error ?? null;
    if (error !== null) {
      if (typeof error !== 'string' || error.length > MAX_AGENT_ERROR)
        throw new ValidationError('input.error', `${String(error).length} characters`, `is longer than ${MAX_AGENT_ERROR} characters`);
      if (CONTROL_EXCEPT_WHITESPACE.test(error)) throw new ValidationError('input.error', error, 'contains control characters');
    }
    if (typeof input.agentVersion !== 'string' || !AGENT_VERSION.test(input.agentVersion)) {
      throw new ValidationError(
        'input.agentVersion',
        input.agentVersion,
        'must be 1-64 characters of letters, digits, ".", "+", "_", "~" or "-" (a version such as 1.4.0-rc.1)',
      );
    }
    if (typeof input.pluginId !== 'string' || !PLUGIN_ID.test(input.pluginId)) {
      throw new ValidationError('input.pluginId', input.pluginId, 'must be 1-128 characters of letters, digits, "@", "/", ".", "_" or "-" (the plugin\'s id)');
    }
    const discovered = input.discoveredInstances == null ? null : validDiscoveredInstances('input.discoveredInstances', input.discoveredInstances);
    const drift = input.driftDetected === true;
    const driver = input.driver == null ? null : validDriverReport('input.driver', input.driver);
    const start = validStart(input);
    const listening = input.listeningSockets == null ? null : validListeningSockets('input.listeningSockets', input.listeningSockets);

    let failed: ObjectStatusChange[] = [];
    let previous: DiscoveredInstanceJson[] = [];
    const accepted = await this.db.transaction(async (tx) => {
      const [host] = await tx.select({ revision: hosts.desiredRevision, name: hosts.name, driver: hosts.driver }).from(hosts).where(eq(hosts.id, hostId));
      if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
      // a new or changed driver: stored, and what it cannot apply is marked failed at once
      if (driver !== null && !sameDriver(host.driver, driver)) {
        await tx.update(hosts).set({ driver }).where(eq(hosts.id, hostId));
        failed = await this.failUnsupported(tx, hostId, { name: host.name, driver });
      }
      if (applied !== null && applied > host.revision) {
        throw new ValidationError('input.appliedRevision', applied, `is ahead of the host's desired revision ${host.revision}`);
      }
      await tx.insert(hostAgents).values({ hostId }).onConflictDoNothing();
      const [before] = await tx.select().from(hostAgents).where(eq(hostAgents.hostId, hostId)).for('update');
      previous = before!.discoveredInstances;
      // revisions only grow, so a lower one than already reported is a late report of the past
      if (applied !== null && before!.appliedRevision !== null && applied < before!.appliedRevision) {
        // how the agent started is news even in a late report: a restarted agent's first report can be one
        await tx
          .update(hostAgents)
          .set({ lastSeenAt: sql`now()`, ...start })
          .where(eq(hostAgents.hostId, hostId));
        return false;
      }
      await tx
        .update(hostAgents)
        .set({
          lastSeenAt: sql`now()`,
          ...(applied !== null ? { appliedRevision: applied, appliedAt: sql`now()` } : {}),
          lastError: error,
          agentVersion: input.agentVersion,
          pluginId: input.pluginId,
          ...(discovered !== null ? { discoveredInstances: discovered, discoveredAt: sql`now()` } : {}),
          ...(listening !== null ? { listeningSockets: listening, listeningSocketsAt: sql`now()` } : {}),
          ...(drift ? { lastDriftAt: sql`now()`, driftRepairs: sql`${hostAgents.driftRepairs} + 1` } : {}),
          ...start,
        })
        .where(eq(hostAgents.hostId, hostId));
      return true;
    });
    for (const batch of statusBatches(failed)) this.events.publish('objectStatus', batch);
    if (accepted) this.events.publish('hostAgentStatus', { hostId });
    // the discovery becomes instances (registered, bound, reclaimed) once the report is stored
    if (accepted && discovered !== null) await this.discovery.reconcile(hostId, discovered, previous);
    return (await this.statuses([hostId]))[0]!;
  }

  /**
   * Marks FAILED (CAPABILITY_NOT_SUPPORTED) the host's objects its driver cannot apply, as the
   * agent will when it applies them (it hands them to no driver); returns the changes.
   */
  private async failUnsupported(tx: Executor, hostId: string, host: { name: string; driver: HostDriverJson }): Promise<ObjectStatusChange[]> {
    const changes: ObjectStatusChange[] = [];
    const on = await tx.select({ id: instances.id, ownerId: instances.ownerId }).from(instances).where(eq(instances.hostId, hostId));
    if (on.length === 0) return changes;
    const ids = on.map((i) => i.id);
    const owners = new Map(on.map((i) => [i.id, i.ownerId]));
    const fail = (
      objectType: ChangeObjectType,
      objectId: string,
      ownerId: string,
      doing: string,
      check: (c: DriverCapabilities) => CapabilityViolation | undefined,
    ) => {
      const error = capabilityError(host, doing, check, (f) => f);
      if (error) changes.push({ objectType, objectId, hostId, ownerId, status: 'failed', error: `${error.code}: ${error.message}`, revision: 0 });
    };
    // a driver that takes every kind of forward fails none: its tens of thousands are not read under
    // the host's row lock; otherwise only the columns the check needs
    const forwards = takesEveryForward(host.driver.capabilities)
      ? []
      : await tx
          .select({
            id: portForwards.id,
            ownerId: portForwards.ownerId,
            protocol: portForwards.protocol,
            targetAddress: portForwards.targetAddress,
            hostPortStart: portForwards.hostPortStart,
            hostPortEnd: portForwards.hostPortEnd,
            targetPortStart: portForwards.targetPortStart,
            sourceCidrs: portForwards.sourceCidrs,
            rateLimit: portForwards.rateLimit,
            balance: portForwards.balance,
          })
          .from(portForwards)
          .where(eq(portForwards.hostId, hostId));
    for (const f of forwards) {
      const ports = { start: f.hostPortStart, end: f.hostPortEnd };
      const targetPorts = { start: f.targetPortStart, end: f.targetPortStart + f.hostPortEnd - f.hostPortStart };
      const needs = {
        protocol: f.protocol,
        ipv6: isIpv6(f.targetAddress),
        targetAddress: f.targetAddress,
        hostPorts: ports,
        targetPorts,
        sourceCidrs: f.sourceCidrs,
        rateLimit: f.rateLimit,
        balance: f.balance,
      };
      fail('port_forward', f.id, f.ownerId, 'applying port forward', (c) => checkPortForward(c, needs));
    }
    for (const r of await tx.select().from(firewallRules).where(inArray(firewallRules.instanceId, ids)))
      fail('firewall_rule', r.id, r.ownerId, 'applying firewall rule', (c) => checkFirewallRule(c, r));
    for (const b of await tx.select().from(bandwidthLimits).where(inArray(bandwidthLimits.instanceId, ids)))
      fail('bandwidth_limit', b.id, b.ownerId, 'applying bandwidth limit', (c) => checkBandwidth(c, b));
    const count = new Map<string, number>();
    for (const n of await tx.select({ id: nics.id, instanceId: nics.instanceId }).from(nics).where(inArray(nics.instanceId, ids)).orderBy(asc(nics.id))) {
      const nth = (count.get(n.instanceId) ?? 0) + 1;
      count.set(n.instanceId, nth);
      fail('nic', n.id, owners.get(n.instanceId)!, 'applying NIC', (c) => checkNics(c, nth));
    }
    const tables = { port_forward: portForwards, firewall_rule: firewallRules, bandwidth_limit: bandwidthLimits, nic: nics } as const;
    for (const change of changes) {
      const table = tables[change.objectType as keyof typeof tables];
      await tx.update(table).set({ status: 'failed', statusError: change.error }).where(eq(table.id, change.objectId));
    }
    return changes;
  }

  /** Per host in the order given: its public addresses and listening sockets (null: never reported), for the port audit's warnings (no authorization). */
  async portAudits(hostIds: readonly string[]): Promise<HostPortAudit[]> {
    const ids = [...new Set(hostIds)];
    const rows = await this.db
      .select({ hostId: hosts.id, publicAddresses: hosts.publicAddresses, sockets: hostAgents.listeningSockets })
      .from(hosts)
      .leftJoin(hostAgents, eq(hostAgents.hostId, hosts.id))
      .where(inArray(hosts.id, ids));
    const of = new Map(rows.map((r) => [r.hostId, { publicAddresses: r.publicAddresses, sockets: r.sockets ?? null }]));
    return hostIds.map((id) => of.get(id) ?? { publicAddresses: [], sockets: null });
  }

  /** Agent statuses of hosts in the order given (no authorization: callers check `mayActForHostAgent`). */
  async statuses(hostIds: readonly string[]): Promise<HostAgentStatus[]> {
    if (hostIds.length === 0) return [];
    const ids = [...new Set(hostIds)];
    const rows = await this.db.select().from(hostAgents).where(inArray(hostAgents.hostId, ids));
    const live = await this.db
      .select({
        hostId: hostAgentConnections.hostId,
        connections: count(),
        connectedAt: sql`max(${hostAgentConnections.connectedAt})`.mapWith(hostAgentConnections.connectedAt),
        freshForMs: sql`extract(epoch from (max(${hostAgentConnections.lastSeenAt}) + ${this.window()} - now())) * 1000`.mapWith(Number),
      })
      .from(hostAgentConnections)
      .where(and(inArray(hostAgentConnections.hostId, ids), this.isLive()))
      .groupBy(hostAgentConnections.hostId);
    const rowOf = new Map(rows.map((r) => [r.hostId, r]));
    const liveOf = new Map(live.map((l) => [l.hostId, l]));
    return hostIds.map((hostId) => {
      const status = emptyStatus(hostId);
      const row = rowOf.get(hostId);
      if (row) Object.assign(status, row);
      const l = liveOf.get(hostId);
      if (l && l.connections > 0) {
        status.online = true;
        status.connections = l.connections;
        status.connectedAt = l.connectedAt;
        status.freshForMs = Math.max(0, Math.round(l.freshForMs));
      }
      return status;
    });
  }

  /**
   * Tracks the presence of the host's agent for as long as `source` (its desired-state stream) is
   * being consumed: marks it connected when it starts, refreshes it every heartbeat, marks it
   * disconnected when it ends. Streams of other actors (admins) pass through untracked.
   */
  track<T>(actor: Actor, hostId: string, source: AsyncIterable<T>): AsyncIterable<T> {
    if (actor.scope !== 'agent' || actor.hostId !== hostId) return source;
    return new Repeater<T>(async (push, stop) => {
      const connectionId = newId();
      let release!: () => void;
      const lifecycle = new Promise<void>((resolve) => (release = resolve));
      this.lifecycles.add(lifecycle);
      const iterator = source[Symbol.asyncIterator]();
      let stopped = false;
      // one heartbeat at a time: a slow database skips beats instead of queueing them
      let beating: Promise<void> | undefined;
      let timer: NodeJS.Timeout | undefined;
      try {
        await this.connect(connectionId, actor, hostId);
        timer = setInterval(() => {
          if (stopped || beating) return;
          beating = this.heartbeat(connectionId, actor, hostId)
            .catch((err: unknown) => this.logger.warn(`agent heartbeat of host ${hostId} failed`, err))
            .finally(() => (beating = undefined));
        }, this.presence.heartbeatMs);
        timer.unref();
        relay(iterator, push, stop, (value: T) => value);
        await stop;
      } catch (err) {
        stop(err);
      } finally {
        stopped = true;
        clearInterval(timer);
        // a heartbeat finishing after the disconnect would bring the connection row back
        await beating;
        await Promise.resolve(iterator.return?.()).catch(() => undefined);
        try {
          await this.disconnect(connectionId, hostId);
        } catch (err) {
          this.logger.warn(`marking the agent of host ${hostId} disconnected failed`, err);
        } finally {
          this.lifecycles.delete(lifecycle);
          release();
        }
      }
    });
  }

  /** Agent status changes (admins only), of one host or all, as they commit; also when an agent ages out without a word. */
  watch(actor: Actor, hostId: string | null): Repeater<HostAgentStatus> {
    if (!isAdmin(actor)) throw new ForbiddenError('hostAgentStatusChanged requires an admin token');
    const only = hostId == null ? null : validId('hostId', hostId);
    return new Repeater<HostAgentStatus>(async (push, stop) => {
      // subscribe first, so no change between the first read and the subscription is missed
      const changes = this.events.subscribe('hostAgentStatus')[Symbol.asyncIterator]();
      const timers = new Map<string, NodeJS.Timeout>();
      const online = new Map<string, boolean>();
      let stopped = false;
      let queue: Promise<void> = Promise.resolve();
      // one host at a time, in event order, so an older read never overtakes a newer one
      const look = (id: string, pushIf: 'always' | 'online changed' | 'never') => {
        queue = queue
          .then(async () => {
            if (stopped) return;
            const [status] = await this.statuses([id]);
            clearTimeout(timers.get(id));
            timers.delete(id);
            const changed = online.get(id) !== status!.online;
            online.set(id, status!.online);
            if (status!.online && status!.freshForMs !== null) {
              // nobody announces an agent whose replica died: look again when it would age out
              const timer = setTimeout(() => look(id, 'online changed'), status!.freshForMs + 50);
              timer.unref();
              timers.set(id, timer);
            }
            if (pushIf === 'always' || (pushIf === 'online changed' && changed)) await push(status!);
          })
          .catch((err: unknown) => stop(err));
      };
      if (only) look(only, 'never');
      else for (const id of await this.onlineHosts()) look(id, 'never');
      void (async () => {
        for (;;) {
          const next = await changes.next();
          if (next.done || stopped) return;
          if (only === null || next.value.hostId === only) look(next.value.hostId, 'always');
        }
      })();
      await stop;
      stopped = true;
      for (const timer of timers.values()) clearTimeout(timer);
      await changes.return?.();
    });
  }

  /** Resolves once the presence bookkeeping of ended subscriptions is written (before the store closes). */
  async settle(timeoutMs = 5000): Promise<void> {
    if (this.lifecycles.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.lifecycles]), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private window() {
    return sql.raw(`interval '${Math.max(1, Math.floor(this.presence.offlineAfterMs))} milliseconds'`);
  }

  private isLive() {
    return sql`${hostAgentConnections.lastSeenAt} > now() - ${this.window()}`;
  }

  private async onlineHosts(): Promise<string[]> {
    const rows = await this.db.selectDistinct({ hostId: hostAgentConnections.hostId }).from(hostAgentConnections).where(this.isLive());
    return rows.map((r) => r.hostId);
  }

  private async liveConnections(tx: Executor, hostId: string): Promise<number> {
    const [row] = await tx
      .select({ n: count() })
      .from(hostAgentConnections)
      .where(and(eq(hostAgentConnections.hostId, hostId), this.isLive()));
    return row?.n ?? 0;
  }

  private async seen(tx: Executor, hostId: string): Promise<void> {
    await tx
      .insert(hostAgents)
      .values({ hostId, lastSeenAt: sql`now()` })
      .onConflictDoUpdate({ target: hostAgents.hostId, set: { lastSeenAt: sql`now()` } });
  }

  private async connect(connectionId: string, actor: Actor, hostId: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      // rows a crashed replica left behind: aged out, nobody refreshes them any more
      await tx.delete(hostAgentConnections).where(and(eq(hostAgentConnections.hostId, hostId), sql`not (${this.isLive()})`));
      await tx.insert(hostAgentConnections).values({ id: connectionId, hostId, tokenId: actor.tokenId, connectedAt: sql`now()`, lastSeenAt: sql`now()` });
      await this.seen(tx, hostId);
    });
    this.events.publish('hostAgentStatus', { hostId });
  }

  private async heartbeat(connectionId: string, actor: Actor, hostId: string): Promise<void> {
    const revived = await this.db.transaction(async (tx) => {
      const wasOnline = (await this.liveConnections(tx, hostId)) > 0;
      // an upsert: a row taken for a crashed replica's (this replica lagged past the window) comes back
      await tx
        .insert(hostAgentConnections)
        .values({ id: connectionId, hostId, tokenId: actor.tokenId, connectedAt: sql`now()`, lastSeenAt: sql`now()` })
        .onConflictDoUpdate({ target: hostAgentConnections.id, set: { lastSeenAt: sql`now()` } });
      await this.seen(tx, hostId);
      return !wasOnline;
    });
    if (revived) this.events.publish('hostAgentStatus', { hostId });
  }

  private async disconnect(connectionId: string, hostId: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.delete(hostAgentConnections).where(eq(hostAgentConnections.id, connectionId));
      await tx
        .update(hostAgents)
        .set({ lastSeenAt: sql`now()` })
        .where(eq(hostAgents.hostId, hostId));
    });
    this.events.publish('hostAgentStatus', { hostId });
  }
}
