/**
 * The `NetworkDriver` contract: what a Gatehouse plugin implements for one kind of host (plain
 * Linux, Docker, LXD, Proxmox VE, ESXi). Full desired state in, idempotent apply out — a second
 * apply of the same state changes nothing, an empty state removes everything Gatehouse created,
 * and nothing that is not Gatehouse's is ever touched. Every method takes one context and one
 * input object and returns a result object, so fields can be added without breaking plugins.
 */
import type { DesiredState, FirewallAction, PortRange } from './desired-state.js';
import { DriverIncompatibleError, type DriverErrorInfo } from './errors.js';
import type { DiagnoseForwardInput, ForwardDiagnosis } from './diagnosis.js';

/** The contract's version. A plugin declares the version it was built for; the agent refuses others. */
export const DRIVER_API_VERSION = 1;
/** Versions this SDK can load. */
export const SUPPORTED_DRIVER_API_VERSIONS: readonly number[] = [1];

/** Structured log lines; the agent forwards them to its log with the host and plugin attached. */
export interface DriverLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** What every driver method receives besides its input. */
export interface DriverContext {
  logger: DriverLogger;
  /** Aborted when the agent stops or the operation is superseded; long work should give up. */
  signal: AbortSignal;
  host: { id: string; name: string; publicAddresses: readonly string[] };
}

/** How a feature is provided: by the backend's own API, or by the Linux dataplane on the agent's host. */
export type Implementation = 'native' | 'dataplane';

/** What a driver can do. The controller refuses objects a host's driver cannot apply; the UI reads it. */
export interface DriverCapabilities {
  portForwards: null | {
    implementation: Implementation;
    protocols: readonly ('tcp' | 'udp')[];
    portRanges: boolean;
    ipv6: boolean;
    sourceAllowLists: boolean;
    /** Whether a forward may carry new-connection rate limits (`DesiredPortForward.rateLimit`); absent: no. */
    rateLimits?: boolean;
    /** Whether a forward may balance new connections over several targets (`DesiredPortForward.balance`); absent: no. */
    multiTarget?: boolean;
  };
  firewall: null | {
    implementation: Implementation;
    directions: readonly ('inbound' | 'outbound')[];
    actions: readonly FirewallAction[];
    priorities: boolean;
    ipv6: boolean;
    icmp: boolean;
  };
  shaping: null | {
    implementation: Implementation;
    ingress: boolean;
    egress: boolean;
    burst: boolean;
  };
  nics: {
    /** NICs per instance. */
    max: number;
    /** Whether NICs can be added to a running instance. */
    hotplug: boolean;
    /** Whether the driver configures the desired static addresses inside the instance. */
    staticAddressing: boolean;
  };
}

/** An instance the driver found on its host. */
export interface DiscoveredInstance {
  /** The backend's own id (namespace name, container id, VMID, moref). */
  externalId: string;
  name: string;
  running: boolean;
  nics: DiscoveredNic[];
}

/** A NIC of a discovered instance. */
export interface DiscoveredNic {
  name: string;
  mac: string;
  /** CIDR form (`10.0.0.5/24`). */
  addresses: string[];
  /** The interface on the host that carries this NIC's traffic, when there is one. */
  hostInterface?: string;
}

/** One object's outcome of an apply. */
export interface ObjectResult {
  objectType: 'port_forward' | 'firewall_rule' | 'bandwidth_limit' | 'nic';
  objectId: string;
  status: 'applied' | 'failed';
  error?: DriverErrorInfo;
}

/** What `apply` did. */
export interface ApplyResult {
  /** Whether anything on the host changed. A second apply of the same state must say false. */
  changed: boolean;
  /** Every object of the desired state, applied or failed. */
  objects: ObjectResult[];
}

/**
 * What is really on the host, in a canonical form that `expectedObservation(desired)` also
 * produces, so the agent (and the conformance kit) can tell drift by comparing the two.
 */
export interface ObservedState {
  /** One entry per host address, protocol and port, sorted. */
  forwards: ObservedForward[];
  /** One entry per instance that has firewall state, by instance id. */
  firewalls: ObservedFirewall[];
  /** One entry per shaped NIC. */
  shaping: ObservedShaping[];
}

/** One forwarded host port. */
export interface ObservedForward {
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  targetAddress: string;
  targetPort: number;
  /** Sorted; empty: any source. */
  sourceCidrs: string[];
}

/** One instance's firewall, rules in evaluation order. */
export interface ObservedFirewall {
  instanceId: string;
  inboundPolicy: FirewallAction;
  outboundPolicy: FirewallAction;
  rules: ObservedFirewallRule[];
}

/** A firewall rule without its id and priority (their order is what counts). */
export interface ObservedFirewallRule {
  direction: 'inbound' | 'outbound';
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  sourceCidr: string | null;
  destinationCidr: string | null;
  ports: PortRange[];
  action: FirewallAction;
}

/** Rates in effect on one NIC, in bits per second. */
export interface ObservedShaping {
  instanceId: string;
  nicId: string;
  ingressBps: number | null;
  egressBps: number | null;
}

/** Byte and packet counters. */
export interface Counter {
  bytes: number;
  packets: number;
}

/**
 * What `stats` returns; counters only grow until the object is re-created. `epoch`, when the
 * driver knows it, names one life of a counter (an interface's ifindex, the handle of the nft set
 * holding it): a new epoch means the counter restarted from zero, whatever its value.
 */
export interface StatsResult {
  /** Per instance NIC: `rx` is traffic into the instance, `tx` out of it. */
  nics: { instanceId: string; nicId: string; rx: Counter; tx: Counter; epoch?: string }[];
  /**
   * Per port forward: new connections' packets and bytes through its DNAT; `rateLimited`, for a
   * forward with a rate limit, the new connections its limits refused (dropped or rejected) in
   * this epoch, from zero when the limit came (a smaller value: the counter restarted).
   */
  forwards: { forwardId: string; counter: Counter; epoch?: string; rateLimited?: number }[];
}

/** Which counters a `stats` call should read (both when absent); a driver may return more. */
export type StatsPart = 'nics' | 'forwards';

/** The contract. */
export interface NetworkDriver {
  readonly id: string;
  /** The plugin's version (reported to the controller with the capabilities). */
  readonly version?: string;
  readonly apiVersion: number;
  readonly capabilities: DriverCapabilities;
  /** Instances on the host with their NICs, MACs and addresses. */
  discover(ctx: DriverContext, input: Record<string, never>): Promise<{ instances: DiscoveredInstance[] }>;
  /**
   * Converges the host to exactly `desired` for what Gatehouse owns. Idempotent. `repair`: the
   * host drifted (or the agent just started) — rebuild from scratch rather than trusting what the
   * driver remembers of its last apply.
   */
  apply(ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult>;
  /** What is really there, for drift detection. */
  observe(ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ObservedState }>;
  /**
   * Optional cheap drift check: how the host differs from the last apply, in words (empty: it
   * does not). `thorough: false` may skip expensive parts (set elements). Agents without it
   * compare `observe` with `expectedObservation(desired)`.
   */
  drift?(ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }>;
  /** Counters per instance NIC and per forward (`parts`: only those; absent: both). */
  stats(ctx: DriverContext, input: { desired?: DesiredState; parts?: readonly StatsPart[] }): Promise<StatsResult>;
  /** Removes everything Gatehouse made for one instance; succeeds when already gone. */
  release(ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }>;
  /** Removes Gatehouse-owned leftovers of instances not in `validInstanceIds`, and nothing else. */
  gc(ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }>;
  /**
   * Optional: why connections to one forward of the applied state may fail, checked on the host
   * (diagnosis.ts). Agents whose driver lacks it answer a diagnosis request with an error.
   */
  diagnoseForward?(ctx: DriverContext, input: DiagnoseForwardInput): Promise<ForwardDiagnosis>;
  /** Frees the driver's resources (connections, timers). */
  close?(): Promise<void>;
}

/** What a plugin package exports (its default export or the module itself). */
export interface DriverPlugin<Config = unknown> {
  id: string;
  apiVersion: number;
  /** Validates `config` (throwing `DriverConfigError` with the field's path) and builds the driver. */
  createDriver(config: Config, ctx: DriverContext): Promise<NetworkDriver> | NetworkDriver;
}

const METHODS = ['discover', 'apply', 'observe', 'stats', 'release', 'gc'] as const;

/** Refuses a plugin (or driver) that is not shaped like one or speaks another API version. */
export function checkCompatible(subject: unknown, what = 'plugin'): void {
  const s = subject as Partial<DriverPlugin & NetworkDriver> | null;
  if (!s || typeof s !== 'object') throw new DriverIncompatibleError(`${what} is not an object`);
  if (typeof s.id !== 'string' || s.id === '') throw new DriverIncompatibleError(`${what} has no id`);
  if (typeof s.apiVersion !== 'number' || !SUPPORTED_DRIVER_API_VERSIONS.includes(s.apiVersion)) {
    throw new DriverIncompatibleError(
      `${what} ${s.id} was built for driver API version ${String(s.apiVersion)}; this agent supports ${SUPPORTED_DRIVER_API_VERSIONS.join(', ')}`,
    );
  }
  if (what === 'plugin' && typeof s.createDriver !== 'function') throw new DriverIncompatibleError(`plugin ${s.id} exports no createDriver function`);
  if (what === 'driver') {
    for (const m of METHODS) if (typeof s[m] !== 'function') throw new DriverIncompatibleError(`driver ${s.id} has no ${m} method`);
    if (!s.capabilities || typeof s.capabilities !== 'object') throw new DriverIncompatibleError(`driver ${s.id} declares no capabilities`);
  }
}

/** Loads a plugin module by specifier (`@gatehouse/plugin-linux`, a path), checks it and builds its driver. */
export async function loadDriver(specifier: string, config: unknown, ctx: DriverContext): Promise<NetworkDriver> {
  const mod = (await import(specifier)) as { default?: unknown } & Record<string, unknown>;
  const plugin = (mod.default && typeof mod.default === 'object' ? mod.default : mod) as DriverPlugin;
  checkCompatible(plugin, 'plugin');
  const driver = await plugin.createDriver(config, ctx);
  checkCompatible(driver, 'driver');
  return driver;
}
