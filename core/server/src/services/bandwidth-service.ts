/**
 * Bandwidth shaping per instance or per NIC: ingress and egress caps, burst, and a monthly
 * traffic quota that throttles or only notifies when exceeded. The API speaks Mbit/s and KB, the
 * store and the agents bits per second and bytes, so no unit is ever guessed downstream.
 */
import { checkBandwidth } from '@gatehouse/sdk';
import { and, eq, isNull } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { bandwidthLimits, nics } from '../db/schema.js';
import { NotFoundError, ValidationError } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { DatabaseToken } from '../di/tokens.js';
import { validId } from '../support/validate.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import { loadOwnedInstance, type Instance } from './ownership.js';
import { requireCapability } from './capability-check.js';
import { bumpHostRevision } from './revision.js';

/** The input field a capability check's field stands for. */
const BANDWIDTH_INPUT: Record<string, string> = {
  ingressBps: 'ingressMbps',
  egressBps: 'egressMbps',
  ingressBurstBytes: 'ingressBurstKb',
  egressBurstBytes: 'egressBurstKb',
};

/** A limit row. */
export type BandwidthLimit = typeof bandwidthLimits.$inferSelect;

/** Input of `setBandwidthLimit`: absent fields are cleared (the call states the whole limit). */
export interface BandwidthInput {
  instanceId: string;
  /** One NIC; absent: the whole instance. */
  nicId?: string | null;
  ingressMbps?: number | null;
  egressMbps?: number | null;
  /** Absent: automatic. */
  ingressBurstKb?: number | null;
  egressBurstKb?: number | null;
  monthlyQuotaGb?: number | null;
  quotaAction?: 'throttle' | 'notify' | null;
  throttleMbps?: number | null;
}

/** Highest accepted rate: 100 Gbit/s. */
export const MAX_MBPS = 100_000;

/** Bits per second of a rate in Mbit/s (decimal mega, as network rates are quoted). */
export function mbpsToBps(mbps: number): number {
  return Math.round(mbps * 1_000_000);
}

function rate(field: string, mbps: number | null | undefined): number | null {
  if (mbps == null) return null;
  if (!Number.isFinite(mbps) || mbps <= 0 || mbps > MAX_MBPS) throw new ValidationError(field, mbps, `must be a rate above 0 and at most ${MAX_MBPS} Mbit/s`);
  const bps = mbpsToBps(mbps);
  if (bps < 8_000) throw new ValidationError(field, mbps, 'is below the smallest rate, 0.008 Mbit/s (1 KB/s)');
  return bps;
}

function burst(field: string, kb: number | null | undefined, bps: number | null): number | null {
  if (kb == null) return null;
  if (!Number.isInteger(kb) || kb < 2 || kb > 1_000_000) throw new ValidationError(field, kb, 'must be an integer from 2 to 1000000 KB');
  if (bps === null) throw new ValidationError(field, kb, 'needs the matching rate');
  return kb * 1000;
}

@injectable()
export class BandwidthService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Sets (creates or replaces) the limit of an instance or one of its NICs. */
  async set(actor: Actor, input: BandwidthInput): Promise<BandwidthLimit> {
    const ingressBps = rate('input.ingressMbps', input.ingressMbps);
    const egressBps = rate('input.egressMbps', input.egressMbps);
    const ingressBurstBytes = burst('input.ingressBurstKb', input.ingressBurstKb, ingressBps);
    const egressBurstBytes = burst('input.egressBurstKb', input.egressBurstKb, egressBps);
    let monthlyQuotaBytes: number | null = null;
    let throttleBps: number | null = null;
    if (input.monthlyQuotaGb != null) {
      const gb = input.monthlyQuotaGb;
      if (!Number.isFinite(gb) || gb <= 0 || gb > 10_000_000) throw new ValidationError('input.monthlyQuotaGb', gb, 'must be above 0 and at most 10000000 GB');
      monthlyQuotaBytes = Math.round(gb * 1e9);
      if (monthlyQuotaBytes < 1_000_000) throw new ValidationError('input.monthlyQuotaGb', gb, 'must be at least 0.001 GB (1 MB; 1 GB = 10^9 bytes)');
      if (!input.quotaAction) throw new ValidationError('input.quotaAction', null, 'is required with input.monthlyQuotaGb: THROTTLE or NOTIFY');
      if (input.quotaAction === 'throttle') {
        throttleBps = rate('input.throttleMbps', input.throttleMbps);
        if (throttleBps === null) throw new ValidationError('input.throttleMbps', null, 'is required when input.quotaAction is THROTTLE');
      } else if (input.throttleMbps != null) {
        throw new ValidationError('input.throttleMbps', input.throttleMbps, 'applies only when input.quotaAction is THROTTLE');
      }
    } else if (input.quotaAction != null || input.throttleMbps != null) {
      throw new ValidationError(
        input.quotaAction != null ? 'input.quotaAction' : 'input.throttleMbps',
        input.quotaAction ?? input.throttleMbps,
        'needs input.monthlyQuotaGb',
      );
    }
    if (ingressBps === null && egressBps === null && monthlyQuotaBytes === null) {
      throw new ValidationError('input.ingressMbps', null, 'or input.egressMbps or input.monthlyQuotaGb is required (removeBandwidthLimit removes a limit)');
    }
    const nicId = input.nicId != null ? validId('input.nicId', input.nicId) : null;
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId, true);
      if (nicId) {
        const [nic] = await tx
          .select({ id: nics.id })
          .from(nics)
          .where(and(eq(nics.id, nicId), eq(nics.instanceId, instance.id)));
        if (!nic) throw new NotFoundError('input.nicId', nicId, `NIC of instance "${instance.name}"`);
      }
      const host = await bumpHostRevision(tx, record, instance.hostId);
      const needs = { ingressBps, egressBps, ingressBurstBytes, egressBurstBytes };
      requireCapability(
        host,
        'setting bandwidth limit',
        (caps) => checkBandwidth(caps, needs),
        (field) => `input.${BANDWIDTH_INPUT[field] ?? field}`,
      );
      const [before] = await tx.select().from(bandwidthLimits).where(this.target(instance.id, nicId));
      const values = {
        ingressBps,
        egressBps,
        ingressBurstBytes,
        egressBurstBytes,
        monthlyQuotaBytes,
        quotaAction: input.quotaAction ?? null,
        throttleBps,
        status: 'pending' as const,
        statusError: null,
        changedRevision: host.desiredRevision,
      };
      let after: BandwidthLimit;
      if (before) {
        [after] = (await tx.update(bandwidthLimits).set(values).where(eq(bandwidthLimits.id, before.id)).returning()) as [BandwidthLimit];
      } else {
        after = { id: newId(), instanceId: instance.id, nicId, ownerId: instance.ownerId, ...values, createdAt: new Date() };
        await tx.insert(bandwidthLimits).values(after);
      }
      await record({
        action: before ? 'bandwidth.update' : 'bandwidth.create',
        objectType: 'BandwidthLimit',
        objectId: after.id,
        ownerId: instance.ownerId,
        before,
        after,
      });
      return after;
    });
  }

  /** Removes the limit of an instance or NIC; succeeds when there is none (returns null). */
  async remove(actor: Actor, input: { instanceId: string; nicId?: string | null }): Promise<BandwidthLimit | null> {
    const nicId = input.nicId != null ? validId('input.nicId', input.nicId) : null;
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId, true);
      const [before] = await tx.select().from(bandwidthLimits).where(this.target(instance.id, nicId));
      if (!before) return null;
      await bumpHostRevision(tx, record, instance.hostId);
      await tx.delete(bandwidthLimits).where(eq(bandwidthLimits.id, before.id));
      await record({ action: 'bandwidth.delete', objectType: 'BandwidthLimit', objectId: before.id, ownerId: before.ownerId, before });
      return before;
    });
  }

  /** Limits of an instance the actor may see: the instance-wide one first, then per NIC. */
  async limitsOf(actor: Actor, instance: Instance): Promise<BandwidthLimit[]> {
    if (!isAdmin(actor) && instance.ownerId !== actor.userId) return [];
    const rows = await this.db.select().from(bandwidthLimits).where(eq(bandwidthLimits.instanceId, instance.id));
    return rows.sort((a, b) => (a.nicId === null ? -1 : b.nicId === null ? 1 : a.id.localeCompare(b.id)));
  }

  /** Removes the limits of the NICs (NIC removed) or of the whole instance (nicIds null), with audit entries. */
  async removeFor(tx: Tx, record: RecordChange, instanceId: string, nicIds: readonly string[] | null, reason: string): Promise<void> {
    const rows = await tx.select().from(bandwidthLimits).where(eq(bandwidthLimits.instanceId, instanceId));
    const doomed = nicIds === null ? rows : rows.filter((r) => r.nicId !== null && nicIds.includes(r.nicId));
    for (const row of doomed) await tx.delete(bandwidthLimits).where(eq(bandwidthLimits.id, row.id));
    await record.many(
      doomed.map((r) => ({ action: 'bandwidth.delete', objectType: 'BandwidthLimit', objectId: r.id, ownerId: r.ownerId, before: r, after: { reason } })),
    );
  }

  private target(instanceId: string, nicId: string | null) {
    return and(eq(bandwidthLimits.instanceId, instanceId), nicId ? eq(bandwidthLimits.nicId, nicId) : isNull(bandwidthLimits.nicId));
  }
}
