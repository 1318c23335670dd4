/**
 * Traffic reports: once per interval, one message per host with the raw cumulative counters the
 * host's driver read. The controller computes the deltas itself (a replay adds 0, a smaller value
 * or a new epoch is a reset), so a lost, repeated or reordered report neither loses nor invents
 * traffic.
 */

/** Most NICs one report may carry. */
export const MAX_TRAFFIC_NICS = 20_000;
/** Most forwards one report may carry. */
export const MAX_TRAFFIC_FORWARDS = 100_000;
/** Longest epoch string (the agent's boot id and the driver's epoch). */
export const MAX_TRAFFIC_EPOCH = 200;

/** One instance NIC's counters: rx is traffic into the instance, tx out of it. */
export interface NicTrafficInput {
  nicId: string;
  /** One life of the counter (the host-side interface's ifindex, `if7`); a new one means it restarted from zero. */
  epoch: string;
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

/** One port forward's counter: bytes and packets arriving on its host ports (before DNAT). */
export interface ForwardTrafficInput {
  forwardId: string;
  /** One life of the counter (the handles of the nft table and sets holding it). */
  epoch: string;
  bytes: number;
  packets: number;
  /**
   * For a forward with a rate limit: the new connections its limits refused in this epoch
   * (cumulative, from zero when the limit came; smaller than before: restarted). Absent otherwise
   * (and from agents of older versions).
   */
  rateLimited?: number | null;
}

/** A group of counters read at one time. */
export interface TrafficReading<T> {
  /** When the counters were read (ISO 8601); not in the future. */
  at: string;
  /** Milliseconds since the previous reading of this group (what the agent really used). */
  intervalMs: number;
  counters: T[];
}

/** Variables of `reportTraffic` (`input`). */
export interface ReportTrafficInput {
  hostId: string;
  /**
   * The host's boot id (`/proc/sys/kernel/random/boot_id`): part of every counter's epoch, since
   * kernel counters restart with the host but not with the agent.
   */
  bootId: string;
  /** Grows with every report of the host, also across agent restarts (it starts from the agent's clock in ms). */
  sequence: number;
  nics: TrafficReading<NicTrafficInput>;
  /** Absent when no forward read finished since the last report (reads of many forwards take longer than an interval). */
  forwards?: TrafficReading<ForwardTrafficInput> | null;
}

/** A counter the controller refused; the report's other counters still count. */
export interface TrafficRejection {
  field: string;
  value: string;
  message: string;
}
