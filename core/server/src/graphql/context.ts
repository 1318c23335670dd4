/**
 * The per-request GraphQL context: who is calling (resolved from the bearer token once), the
 * request id every audit entry of the request carries, the services, and per-request loaders.
 */
import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { DependencyContainer } from 'tsyringe';
import type { Actor } from '../auth/actor.js';
import type { ProxyManager } from '../proxy/proxy-manager.js';
import { ProxyManagerToken } from '../proxy/proxy-manager-token.js';
import { AuditService } from '../services/audit-service.js';
import { BandwidthService } from '../services/bandwidth-service.js';
import { DesiredStateService } from '../services/desired-state-service.js';
import { FirewallService } from '../services/firewall-service.js';
import { HostAgentService, type HostAgentStatus, type HostPortAudit } from '../services/host-agent-service.js';
import { HostService } from '../services/host-service.js';
import { InstanceService, type Instance, type Nic } from '../services/instance-service.js';
import { ObjectStatusService } from '../services/object-status-service.js';
import { PoolService, type Allocation, type Pool } from '../services/pool-service.js';
import { PortForwardImportService } from '../services/port-forward-import-service.js';
import { PortForwardService } from '../services/port-forward-service.js';
import { SessionService } from '../services/session-service.js';
import { SshAccessService } from '../services/ssh-access-service.js';
import { SshKeyService } from '../services/ssh-key-service.js';
import { TerminalRecordingService } from '../services/terminal-recording-service.js';
import { TerminalService } from '../services/terminal-service.js';
import { TunnelBroker } from '../tunnel/tunnel-broker.js';
import { DiagnosisBroker } from '../services/diagnosis-broker.js';
import { UserService, type User } from '../services/user-service.js';
import { WebProxyService } from '../services/web-proxy-service.js';
import { TrafficHistory } from '../traffic/traffic-history.js';
import { TrafficQuota } from '../traffic/traffic-quota.js';
import { TrafficIngest } from '../traffic/traffic-ingest.js';
import { TrafficLive } from '../traffic/traffic-live.js';

/** The services resolvers call. */
export interface Services {
  users: UserService;
  sessions: SessionService;
  hosts: HostService;
  hostAgents: HostAgentService;
  instances: InstanceService;
  pools: PoolService;
  forwards: PortForwardService;
  forwardImport: PortForwardImportService;
  firewall: FirewallService;
  bandwidth: BandwidthService;
  proxies: WebProxyService;
  desiredState: DesiredStateService;
  objectStatus: ObjectStatusService;
  audit: AuditService;
  sshKeys: SshKeyService;
  sshAccess: SshAccessService;
  /** Web terminal tickets and instances' learned SSH host keys. */
  terminals: TerminalService;
  /** Web terminal recordings (asciicast v2) and the per-user switch. */
  terminalRecordings: TerminalRecordingService;
  /** Tunnel streams through host agents (one per container: a singleton). */
  tunnels: TunnelBroker;
  diagnoses: DiagnosisBroker;
  /** Agents' traffic reports. */
  trafficIngest: TrafficIngest;
  /** Stored traffic: history curves and billing periods. */
  trafficHistory: TrafficHistory;
  trafficQuota: TrafficQuota;
  /** Live rates. */
  trafficLive: TrafficLive;
  /** The reverse proxy manager; absent when this controller drives no Caddy. */
  proxyManager?: ProxyManager;
}

/** GraphQL context. */
export interface GraphQLContext {
  /** Null when the request carried no token; resolvers call `requireActor`. */
  actor: Actor | null;
  requestId: string;
  /** The peer address of the connection (rate limiting of sign-ins); `unknown` when there is none. */
  clientAddress: string;
  services: Services;
  loaders: Loaders;
}

/** Batches the lookups nested lists would otherwise make one by one. */
export interface Loaders {
  nicsOfInstance: DataLoader<string, Nic[]>;
  addressesOfNic: DataLoader<string, Allocation[]>;
  pool: DataLoader<string, Pool | undefined>;
  hostAgent: DataLoader<string, HostAgentStatus>;
  portAudit: DataLoader<string, HostPortAudit>;
  /** A NIC's instance (whoever owns it: the field resolving it checks the caller). */
  instanceOfNic: DataLoader<string, Instance | undefined>;
  /** A user by id (whoever it is: the field resolving it checks the caller). */
  user: DataLoader<string, User | undefined>;
}

/** Resolves the services from the container. */
export function resolveServices(container: DependencyContainer): Services {
  return {
    users: container.resolve(UserService),
    sessions: container.resolve(SessionService),
    hosts: container.resolve(HostService),
    hostAgents: container.resolve(HostAgentService),
    instances: container.resolve(InstanceService),
    pools: container.resolve(PoolService),
    forwards: container.resolve(PortForwardService),
    forwardImport: container.resolve(PortForwardImportService),
    firewall: container.resolve(FirewallService),
    bandwidth: container.resolve(BandwidthService),
    proxies: container.resolve(WebProxyService),
    desiredState: container.resolve(DesiredStateService),
    objectStatus: container.resolve(ObjectStatusService),
    audit: container.resolve(AuditService),
    sshKeys: container.resolve(SshKeyService),
    sshAccess: container.resolve(SshAccessService),
    terminals: container.resolve(TerminalService),
    terminalRecordings: container.resolve(TerminalRecordingService),
    tunnels: container.resolve(TunnelBroker),
    diagnoses: container.resolve(DiagnosisBroker),
    trafficIngest: container.resolve(TrafficIngest),
    trafficHistory: container.resolve(TrafficHistory),
    trafficQuota: container.resolve(TrafficQuota),
    trafficLive: container.resolve(TrafficLive),
    proxyManager: container.isRegistered(ProxyManagerToken) ? container.resolve(ProxyManagerToken) : undefined,
  };
}

function groupBy<T>(keys: readonly string[], rows: T[], keyOf: (row: T) => string | null): T[][] {
  const map = new Map<string, T[]>(keys.map((k) => [k, []]));
  for (const row of rows) {
    const k = keyOf(row);
    if (k !== null) map.get(k)?.push(row);
  }
  return keys.map((k) => map.get(k) ?? []);
}

/** Creates the per-request loaders. */
export function createLoaders(services: Services): Loaders {
  return {
    nicsOfInstance: new DataLoader(async (ids) => groupBy(ids, await services.instances.nicsOf(ids), (n) => n.instanceId)),
    addressesOfNic: new DataLoader(async (ids) => groupBy(ids, await services.pools.addressesOfNics(ids), (a) => a.nicId)),
    pool: new DataLoader(async (ids) => groupBy(ids, await services.pools.getMany(ids), (p) => p.id).map((g) => g[0])),
    hostAgent: new DataLoader((ids) => services.hostAgents.statuses(ids)),
    portAudit: new DataLoader((ids) => services.hostAgents.portAudits(ids)),
    instanceOfNic: new DataLoader(async (ids) => {
      const byNic = new Map((await services.instances.ofNics(ids)).map((row) => [row.nicId, row.instance]));
      return ids.map((id) => byNic.get(id));
    }),
    user: new DataLoader(async (ids) => {
      const byId = new Map((await services.users.getMany(ids)).map((u) => [u.id, u]));
      return ids.map((id) => byId.get(id));
    }),
  };
}

/** The caller, or an UNAUTHENTICATED error; agent-scoped tokens are refused unless the operation is for agents. */
export function requireActor(ctx: GraphQLContext, options: { allowAgent?: boolean } = {}): Actor {
  if (!ctx.actor) {
    throw new GraphQLError('Authentication required: send "Authorization: Bearer <token>"', { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
  }
  if (ctx.actor.scope === 'agent' && !options.allowAgent) {
    throw new GraphQLError('Agent tokens may only be used by host agents', { extensions: { code: 'FORBIDDEN' } });
  }
  return ctx.actor;
}
