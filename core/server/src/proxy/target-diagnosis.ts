/**
 * Why a proxy's target does not answer (after a 502, or on request): its instance reported
 * stopped by the host's agent, or a probe from this machine (where Caddy runs) — refused,
 * timeout, unreachable, TLS mismatch, bad response. The result is the proxy's `targetHealth`.
 */
import { and, eq, isNotNull } from 'drizzle-orm';
import type { Database } from '../db/database.js';
import { hostAgents, instances, webProxies } from '../db/schema.js';
import type { Logger } from '../support/logger.js';
import { probeTarget, type ProbeResult, type ProbeTarget } from './probe.js';

/** The diagnosis of a proxy's target, as stored. */
export interface TargetDiagnosis {
  state: ProbeResult['state'] | 'instance_stopped';
  detail: string;
  checkedAt: Date;
}

/** Options of the target diagnosis. */
export interface TargetDiagnosisOptions {
  /** Least time between two diagnoses of one proxy's target after 502s (default 10 s). */
  intervalMs?: number;
  /** Probe timeout for a target (default 3 s). */
  probeTimeoutMs?: number;
  /** The probe (a fake in unit tests). */
  probe?: (target: ProbeTarget, options: { timeoutMs: number }) => Promise<ProbeResult>;
  /** The clock (a fake in unit tests). */
  now?: () => number;
}

/** What the host's agent last discovered of an instance, as the diagnosis needs it. */
export interface DiscoveredInstanceState {
  externalId?: string | null;
  name: string;
  running?: boolean;
}

/**
 * The diagnosis that needs no probe: the instance is stopped when its host's agent reported it so
 * (found by backend id, else by name); undefined when it runs or was not reported.
 */
export function stoppedInstanceDiagnosis(
  discovered: readonly DiscoveredInstanceState[] | undefined,
  instance: { name: string; externalId: string | null },
  now: Date,
): TargetDiagnosis | undefined {
  const seen = discovered?.find((d) => (instance.externalId ? d.externalId === instance.externalId : d.name === instance.name));
  if (seen?.running !== false) return undefined;
  return { state: 'instance_stopped', detail: `instance "${instance.name}" is stopped (its host's agent reported it)`, checkedAt: now };
}

/** Diagnoses proxies' targets, at most once per proxy per interval after 502s. */
export class TargetDiagnoser {
  private last = new Map<string, number>();

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly options: TargetDiagnosisOptions = {},
  ) {}

  /** After a 502: diagnoses the proxy's target unless it was diagnosed within the interval; returns whether it started one. */
  diagnoseSoon(proxyId: string): boolean {
    const now = this.now();
    if (now - (this.last.get(proxyId) ?? -Infinity) < (this.options.intervalMs ?? 10_000)) return false;
    this.last.set(proxyId, now);
    void this.diagnose(proxyId).catch((err: unknown) => this.logger.error('proxy manager: diagnosis failed', err));
    return true;
  }

  /** Forgets a deleted proxy. */
  forget(proxyId: string): void {
    this.last.delete(proxyId);
  }

  /** Diagnoses a proxy's target now and stores the result; undefined when the proxy is gone. */
  async diagnose(proxyId: string): Promise<TargetDiagnosis | undefined> {
    const [row] = await this.db
      .select({
        targetAddress: webProxies.targetAddress,
        targetPort: webProxies.targetPort,
        targetProtocol: webProxies.targetProtocol,
        hostId: webProxies.hostId,
        name: instances.name,
        externalId: instances.externalId,
      })
      .from(webProxies)
      .innerJoin(instances, eq(instances.id, webProxies.instanceId))
      .where(eq(webProxies.id, proxyId));
    if (!row) return undefined;
    const [agent] = await this.db
      .select({ discovered: hostAgents.discoveredInstances })
      .from(hostAgents)
      .where(and(eq(hostAgents.hostId, row.hostId), isNotNull(hostAgents.discoveredAt)));
    let diagnosis = stoppedInstanceDiagnosis(agent?.discovered, row, new Date(this.now()));
    if (!diagnosis) {
      const probe = await (this.options.probe ?? probeTarget)(
        { address: row.targetAddress, port: row.targetPort, protocol: row.targetProtocol },
        { timeoutMs: this.options.probeTimeoutMs ?? 3000 },
      );
      diagnosis = { state: probe.state, detail: probe.detail, checkedAt: new Date(this.now()) };
    }
    await this.db
      .update(webProxies)
      .set({ targetState: diagnosis.state, targetDetail: diagnosis.detail, targetCheckedAt: diagnosis.checkedAt })
      .where(eq(webProxies.id, proxyId));
    return diagnosis;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}
