/**
 * The agent's stats loop: every interval it reads the NIC counters through the driver and sends
 * them, raw and cumulative, in one `reportTraffic` message for the host. Forward counters are read
 * beside it, one read at a time: when a read takes longer than the interval (tens of thousands of
 * forwards), their interval stretches to what the read took, and the report says so, while NIC
 * counters stay per interval. Nothing is buffered while the controller is away: the counters are
 * cumulative, so the next report carries what the lost ones would have.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  REPORT_TRAFFIC_MUTATION,
  type ForwardTrafficInput,
  type NicTrafficInput,
  type ReportTrafficInput,
  type TrafficReading,
} from '@gatehouse/agent-protocol';
import { toDriverError, type DesiredState, type DriverContext, type NetworkDriver } from '@gatehouse/sdk';
import type { AgentLogger } from './controller.js';

/** What the reporter needs from its agent. */
export interface TrafficReporterHost {
  driver: NetworkDriver;
  logger: AgentLogger;
  /** The host id, once known. */
  hostId(): string | null;
  /** The document last applied (nothing is read before the first apply). */
  applied(): DesiredState | undefined;
  /** Whether the controller connection is up (reports are skipped while it is not). */
  connected(): boolean;
  ctx(desired: DesiredState): DriverContext;
  /** Sends a mutation; resolves to its answer. */
  request(query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>>;
}

/** The host's boot id (kernel counters restart with it); a random one where the kernel does not say. */
export async function hostBootId(path = '/proc/sys/kernel/random/boot_id'): Promise<string> {
  try {
    const id = (await readFile(path, 'utf8')).trim();
    if (/^[0-9a-f-]{8,64}$/.test(id)) return id;
  } catch {
    // not Linux: a random id makes every start a new epoch (a reset, never a double count of old values)
  }
  return randomUUID();
}

/** Reads counters every `intervalMs` and reports them (see the file comment). */
export class TrafficReporter {
  private timer: NodeJS.Timeout | undefined;
  private bootId: string | undefined;
  private sequence = Date.now();
  private nicRead: Promise<void> | undefined;
  private forwardRead: Promise<void> | undefined;
  private lastNicAt = 0;
  private lastForwardAt = 0;
  /** A forward reading finished since the last report. */
  private forwards: TrafficReading<ForwardTrafficInput> | undefined;
  private stopped = false;

  constructor(
    private readonly host: TrafficReporterHost,
    private readonly intervalMs: number,
  ) {}

  /** Starts the loop. */
  async start(): Promise<void> {
    this.bootId = await hostBootId();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the loop; a read in flight finishes without reporting. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([this.nicRead, this.forwardRead]);
  }

  /** One interval: a NIC read (unless the last one is still running), and a forward read unless one is. */
  tick(): void {
    const desired = this.host.applied();
    if (this.stopped || !desired || !this.host.hostId()) return;
    if (!this.forwardRead) this.forwardRead = this.readForwards(desired).finally(() => (this.forwardRead = undefined));
    if (!this.nicRead) this.nicRead = this.readNicsAndReport(desired).finally(() => (this.nicRead = undefined));
  }

  private async readForwards(desired: DesiredState): Promise<void> {
    try {
      const stats = await this.host.driver.stats(this.host.ctx(desired), { desired, parts: ['forwards'] });
      const now = Date.now();
      this.forwards = {
        at: new Date(now).toISOString(),
        intervalMs: this.lastForwardAt === 0 ? this.intervalMs : now - this.lastForwardAt,
        counters: stats.forwards.map((f) => ({
          forwardId: f.forwardId,
          epoch: f.epoch ?? 'driver',
          bytes: f.counter.bytes,
          packets: f.counter.packets,
          ...(f.rateLimited !== undefined ? { rateLimited: f.rateLimited } : {}),
        })),
      };
      this.lastForwardAt = now;
    } catch (err) {
      this.host.logger.warn('reading forward counters failed', { error: toDriverError(err).message });
    }
  }

  private async readNicsAndReport(desired: DesiredState): Promise<void> {
    let nics: NicTrafficInput[];
    const now = Date.now();
    try {
      const stats = await this.host.driver.stats(this.host.ctx(desired), { desired, parts: ['nics'] });
      nics = stats.nics.map((n) => ({
        nicId: n.nicId,
        epoch: n.epoch ?? 'driver',
        rxBytes: n.rx.bytes,
        rxPackets: n.rx.packets,
        txBytes: n.tx.bytes,
        txPackets: n.tx.packets,
      }));
    } catch (err) {
      this.host.logger.warn('reading NIC counters failed', { error: toDriverError(err).message });
      return;
    }
    const intervalMs = this.lastNicAt === 0 ? this.intervalMs : now - this.lastNicAt;
    this.lastNicAt = now;
    if (this.stopped || !this.host.connected()) return; // the next report carries these bytes
    const forwards = this.forwards;
    this.forwards = undefined;
    const input: ReportTrafficInput = {
      hostId: this.host.hostId()!,
      bootId: this.bootId!,
      sequence: ++this.sequence,
      nics: { at: new Date(now).toISOString(), intervalMs, counters: nics },
      forwards: forwards ?? null,
    };
    try {
      const data = await this.host.request(REPORT_TRAFFIC_MUTATION, { input });
      const answer = data.reportTraffic as { message?: string; outcome?: { rejected: { field: string; message: string }[] } } | undefined;
      if (answer?.message) this.host.logger.warn('the controller refused a traffic report', { error: answer.message });
      else if (answer?.outcome?.rejected.length)
        this.host.logger.warn('the controller refused some counters', { rejected: answer.outcome.rejected.slice(0, 5) });
    } catch (err) {
      if (!this.stopped) this.host.logger.warn('traffic report not delivered', { error: (err as Error).message });
    }
  }
}
