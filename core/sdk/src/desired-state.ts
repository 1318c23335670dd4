/**
 * The desired-state document: everything one host must apply, at one revision. The controller
 * compiles it from its database; an agent receives the full document (then newer revisions) and
 * makes its host match it through its plugin. Fields are only ever added, never changed in meaning;
 * `apiVersion` changes when they must be.
 */

/** Version of this document's shape. */
export const DESIRED_STATE_API_VERSION = 1;

/** An inclusive port range. */
export interface PortRange {
  start: number;
  end: number;
}

/** What the firewall does with a packet. */
export type FirewallAction = 'allow' | 'reject' | 'drop';

/** One host's desired state at one revision. */
export interface DesiredState {
  apiVersion: typeof DESIRED_STATE_API_VERSION;
  hostId: string;
  hostName: string;
  /** Monotonic: every change to anything below increases it. */
  revision: number;
  /** Addresses forwards listen on when they name none. */
  publicAddresses: string[];
  /** Instances in id order; everything inside is in a stable order too, so equal states serialise equally. */
  instances: DesiredInstance[];
}

/** One VM or container and what applies to it. */
export interface DesiredInstance {
  id: string;
  name: string;
  /** The backend's own id (container id, VMID, moref), when known. */
  externalId: string | null;
  nics: DesiredNic[];
  firewall: DesiredFirewall;
  /** The instance-wide limit (nicId null) first, then per-NIC limits. */
  bandwidth: DesiredBandwidth[];
  portForwards: DesiredPortForward[];
}

/** A network interface with its static addresses. */
export interface DesiredNic {
  id: string;
  name: string;
  mac: string;
  /** Bridge or network name. */
  network: string;
  addresses: DesiredAddress[];
}

/** An address (or delegated IPv6 prefix) held by a NIC. */
export interface DesiredAddress {
  address: string;
  /** Interface form: the subnet's prefix length for single addresses, the delegated length for prefixes. */
  prefixLength: number;
  /** True for a delegated prefix rather than one address. */
  delegated: boolean;
  gateway: string | null;
  dns: string[];
}

/** An instance's firewall: rules in evaluation order (first match decides), then the policies. */
export interface DesiredFirewall {
  inboundPolicy: FirewallAction;
  outboundPolicy: FirewallAction;
  /** Enabled rules only, ordered by direction, priority, then creation. */
  rules: DesiredFirewallRule[];
}

/** One firewall rule. */
export interface DesiredFirewallRule {
  id: string;
  direction: 'inbound' | 'outbound';
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  sourceCidr: string | null;
  destinationCidr: string | null;
  /** Destination ports for tcp/udp; empty: every port. */
  ports: PortRange[];
  action: FirewallAction;
  priority: number;
}

/** A bandwidth limit; rates in bits per second, bursts in bytes (already resolved when automatic). */
export interface DesiredBandwidth {
  id: string;
  /** Null: every NIC of the instance. */
  nicId: string | null;
  ingressBps: number | null;
  egressBps: number | null;
  ingressBurstBytes: number | null;
  egressBurstBytes: number | null;
  monthlyQuotaBytes: number | null;
  quotaAction: 'throttle' | 'notify' | null;
  throttleBps: number | null;
}

/** A NAT port forward from the host to this instance. */
export interface DesiredPortForward {
  id: string;
  protocol: 'tcp' | 'udp' | 'both';
  /** Null: every public address of the host of the target's family. */
  hostAddress: string | null;
  hostPorts: PortRange;
  targetAddress: string;
  targetPorts: PortRange;
  /** Empty: any source. */
  sourceCidrs: string[];
  /** New-connection rate limits; absent or null: none (a driver without `portForwards.rateLimits` cannot apply one). */
  rateLimit?: DesiredRateLimit | null;
  /**
   * Several targets behind the one host port, new connections balanced over them; absent or null:
   * `targetAddress` alone (a driver without `portForwards.multiTarget` cannot apply one).
   * `targetAddress` is one of the targets, so a reader that knows only it still sees a valid forward.
   */
  balance?: DesiredBalance | null;
}

/** How a forward's new connections are spread over its targets. */
export interface DesiredBalance {
  /** 1 to 16 targets of one address family, each address once; targets whose instance is stopped are left out by the controller. */
  targets: DesiredForwardTarget[];
  /**
   * False: each new connection goes to the next target in weighted turn. True: a hash of the
   * source address picks the target, so one client keeps reaching the same one.
   */
  sourceAffinity: boolean;
}

/** One target of a balanced forward; every target gets the forward's target port(s). */
export interface DesiredForwardTarget {
  /** The instance holding the address (the forward's own instance or another of its owner). */
  instanceId: string;
  address: string;
  /** Share of new connections relative to the other targets' weights, 1 to 100. */
  weight: number;
}

/**
 * New-connection rate limits of a forward (DDoS hardening): new connections beyond the rate, after
 * a burst, are dropped or rejected. Established connections are never limited.
 */
export interface DesiredRateLimit {
  /** New connections per second from one source address; null: no per-source limit. */
  perSource: number | null;
  /** New connections per second from all sources together (per host address and protocol); null: no overall limit. */
  total: number | null;
  /** New connections allowed at once above the rate (the bucket's depth), 0 or more. */
  burst: number;
  /** What an excess connection gets: silently dropped, or refused (TCP reset, ICMP port unreachable). */
  action: 'drop' | 'reject';
}
