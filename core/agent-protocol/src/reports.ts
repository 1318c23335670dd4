/**
 * What an agent reports, as it travels (the variables of the report mutations) and as the
 * controller's services take them: one set of types for both sides.
 */
import type { DriverCapabilities } from '@gatehouse/sdk';

/** Object kinds an agent reports a status for, and their GraphQL enum names. */
export const STATUS_OBJECT_TYPES = {
  port_forward: 'PORT_FORWARD',
  firewall_rule: 'FIREWALL_RULE',
  bandwidth_limit: 'BANDWIDTH_LIMIT',
  nic: 'NIC',
} as const;

/** An object kind as services name it (`port_forward`). */
export type StatusObjectType = keyof typeof STATUS_OBJECT_TYPES;
/** An object kind as it travels (`PORT_FORWARD`). */
export type WireStatusObjectType = (typeof STATUS_OBJECT_TYPES)[StatusObjectType];

/** Statuses an agent reports, and their GraphQL enum names. */
export const REPORTED_STATUSES = { applied: 'APPLIED', failed: 'FAILED', drifted: 'DRIFTED', pending: 'PENDING' } as const;

/** One object's status as it travels. */
export interface WireObjectStatus {
  objectType: WireStatusObjectType;
  objectId: string;
  status: (typeof REPORTED_STATUSES)[keyof typeof REPORTED_STATUSES];
  /** FAILED only: `CODE: message`, one line, at most 2,000 characters. */
  error?: string | null;
}

/** Variables of `reportObjectStatus` (`input`). */
export interface ReportObjectStatusInput {
  hostId: string;
  /** The desired revision these statuses are for. */
  revision: number;
  /** At most 10,000. */
  objects: WireObjectStatus[];
}

/** A discovered instance as the agent sends it. */
export interface DiscoveredInstanceInput {
  externalId: string;
  name: string;
  /** Whether it runs; null/absent: the plugin does not say. */
  running?: boolean | null;
  nics: readonly { name: string; mac?: string | null; addresses: readonly string[] }[];
}

/** The plugin an agent runs and what it can do (sent with every host report; stored per host). */
export interface DriverReportInput {
  /** The plugin id (`linux`, `lxd`, `json-file`): what `Host.backend` names. */
  id: string;
  /** The plugin's version, when it declares one. */
  version?: string | null;
  /** The driver API version the plugin was built for. */
  apiVersion: number;
  capabilities: DriverCapabilities;
}

/** Variables of `reportHostStatus` (`input`), also what the controller's service takes. */
export interface ReportHostStatusInput {
  hostId: string;
  /** Null: nothing applied since the agent started (its first apply failed); the stored revision stays. */
  appliedRevision?: number | null;
  error?: string | null;
  agentVersion: string;
  pluginId: string;
  /** The driver and its capabilities; absent: unchanged (agents before capabilities were reported). */
  driver?: DriverReportInput | null;
  /** Null: unchanged since the last report; an empty list: none. */
  discoveredInstances?: readonly DiscoveredInstanceInput[] | null;
  /** The agent found the host differing from what it had applied, and repaired it. */
  driftDetected?: boolean | null;
  /** Where this run of the agent got its first state: its on-disk cache (before connecting) or the controller. Absent: unchanged. */
  startedFrom?: AgentStartSource | null;
  /** With CACHE: the cached revision the agent applied at start. */
  cachedRevision?: number | null;
  /**
   * The host's listening sockets (sent with each discovery); null/absent: unchanged (also agents
   * before the port audit); an empty list: none.
   */
  listeningSockets?: readonly ListeningSocketInput[] | null;
}

/** Transport protocols of a listening socket, as they travel. */
export const LISTENING_PROTOCOLS = ['TCP', 'UDP'] as const;

/** Most listening sockets one report may carry. */
export const MAX_LISTENING_SOCKETS = 4096;

/**
 * A socket listening on the agent's host (TCP in LISTEN, or a UDP socket bound to a port and
 * connected to no peer), read from /proc/net: what a forward on the same port would shadow.
 */
export interface ListeningSocketInput {
  protocol: (typeof LISTENING_PROTOCOLS)[number];
  /** The bound address, canonical (`0.0.0.0` and `::` for every address). */
  address: string;
  port: number;
  /** The owning process's name (`/proc/<pid>/comm`) when readable; null when not. */
  process?: string | null;
  /** Its process id when readable. */
  pid?: number | null;
}

/** Where an agent's run got its first desired state, as it travels. */
export const AGENT_START_SOURCES = ['CACHE', 'CONTROLLER'] as const;
/** `CACHE`: the last-known-good state on the host, applied before connecting; `CONTROLLER`: none usable, waited for the controller. */
export type AgentStartSource = (typeof AGENT_START_SOURCES)[number];

/** One message of the desired-state subscription: the full document first, then a patch per revision. */
export interface DesiredStateEvent {
  hostId: string;
  revision: number;
  apiVersion: number;
  /** The whole document (unchecked: the agent checks it). */
  full: unknown;
  /** Or the difference from the previous message (`DesiredStatePatch`, unchecked). */
  patch: unknown;
}
