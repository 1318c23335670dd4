/**
 * Loads a host's desired state in one consistent snapshot and streams new revisions as they
 * commit. Every change bumps the host's revision in its own transaction, so a document read
 * under REPEATABLE READ is exactly the state at the revision it carries.
 */
import { applyDesiredStatePatch, diffDesiredState, type DesiredStateMessage, type DesiredStatePatch } from '@gatehouse/agent-protocol';
import { CoalescingRunner, type DesiredPortForward, type DesiredState } from '@gatehouse/sdk';
import { and, eq, gt, inArray, type SQL } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import {
  bandwidthLimits,
  firewallRules,
  forwardIsVisible,
  hostAgents,
  hosts,
  instances,
  ipAllocations,
  ipPools,
  nics,
  portForwardRemovals,
  portForwards,
  trafficQuotaStates,
} from '../db/schema.js';
import { compileDesiredState } from '../desired-state/compile.js';
import { ForbiddenError, NotFoundError } from '../support/errors.js';
import type { EventBus } from '../events/event-bus.js';
import { DatabaseToken, EventBusToken } from '../di/tokens.js';
import { validId } from '../support/validate.js';
import { isStoreUnavailable } from '../support/unavailable.js';

/**
 * How long after its last read a stream trusts the tombstones to list every forward deleted since:
 * half the hour the deletion trigger keeps them (migration forward_removals).
 */
const REMOVALS_TRUSTED_MS = 30 * 60_000;

/** How long a desired-state stream waits before reading again after the database was unavailable. */
const UNAVAILABLE_RETRY_MS = 1000;

@injectable()
export class DesiredStateService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
  ) {}

  /** The host's desired state now. Admins, or an agent token bound to this host. */
  async get(actor: Actor, hostId: string): Promise<DesiredState> {
    const id = validId('hostId', hostId);
    this.authorize(actor, id);
    return this.load(id);
  }

  /**
   * The full state first, then each newer committed revision; changes that commit while a
   * document is being read are folded into the next one, so a slow agent is not flooded.
   */
  stream(actor: Actor, hostId: string): Repeater<DesiredState> {
    const id = validId('hostId', hostId);
    this.authorize(actor, id);
    let sent = -1;
    return this.watch(id, async () => {
      const state = await this.load(id);
      if (state.revision <= sent) return undefined;
      sent = state.revision;
      return state;
    });
  }

  /**
   * As `stream`, but after the first full document each revision comes as a patch from the one
   * sent before (see @gatehouse/agent-protocol patch.ts): what agents subscribe to, so one change
   * among 250,000 forwards is a few hundred bytes to send, parse and check rather than the whole
   * document. A patch reads only what changed since the last message: the forwards whose
   * `changed_revision` is newer (created or edited) and the tombstones of those deleted since
   * (`port_forward_removals`). A stream that sent nothing for half the time tombstones are kept
   * reads the whole state and compares.
   */
  changes(actor: Actor, hostId: string): Repeater<DesiredStateMessage & { hostId: string; revision: number; apiVersion: number }> {
    const id = validId('hostId', hostId);
    this.authorize(actor, id);
    let previous: Sent | undefined;
    return this.watch(id, async () => {
      const before = previous;
      let message: DesiredStateMessage;
      if (!before) {
        const state = await this.load(id);
        message = { full: state };
        previous = sent(state);
      } else {
        const read = await this.loadSince(id, before);
        if (read.state.revision <= before.headers.revision) return undefined;
        if (read.removed) {
          const patch = patchFromChanged(before, read.state, read.removed);
          message = { patch };
          previous = advance(before, patch);
        } else {
          message = { patch: diffDesiredState(documentOf(before), read.state) };
          previous = sent(read.state);
        }
      }
      const state = previous.headers;
      return { ...message, hostId: state.hostId, revision: state.revision, apiVersion: state.apiVersion };
    });
  }

  /** Runs `next` once at the start and again after every committed revision of the host (changes during a run fold into one more run); pushes what it returns. */
  private watch<T>(hostId: string, next: () => Promise<T | undefined>): Repeater<T> {
    return new Repeater<T>(async (push, stop) => {
      // subscribe before the first read, so no revision committed in between is missed
      const changes = this.events.subscribe('hostRevision')[Symbol.asyncIterator]();
      const reads = new CoalescingRunner(async () => {
        const value = await next();
        if (value !== undefined) await push(value);
      });
      // the database restarting is no reason to end the stream: read again once it may be back
      const read = (): void => void reads.run().catch((err: unknown) => (isStoreUnavailable(err) ? setTimeout(read, UNAVAILABLE_RETRY_MS).unref() : stop(err)));
      read();
      void (async () => {
        for (;;) {
          const change = await changes.next();
          if (change.done) return;
          if (change.value.hostId === hostId) read();
        }
      })();
      await stop;
      void reads.stop();
      await changes.return?.();
    });
  }

  /** Reads and compiles the state in one REPEATABLE READ transaction. */
  async load(hostId: string): Promise<DesiredState> {
    return this.readOnly((tx) => this.compile(tx, hostId, eq(portForwards.hostId, hostId)));
  }

  /**
   * The state at the newest revision with only the forwards created or changed since `sent`, and
   * the ids of those deleted since (`removed`); the whole state (`removed` undefined) when the
   * tombstones since then may have been pruned. No forward count is read to check it (at 250,000
   * forwards that alone costs tens of milliseconds per change): every write of a forward stamps the
   * host's new revision on it (an import's rows the revision that makes them visible), and every
   * deletion leaves a tombstone.
   */
  private async loadSince(hostId: string, sent: Sent): Promise<{ state: DesiredState; removed?: string[] }> {
    const revision = sent.headers.revision;
    return this.readOnly(async (tx) => {
      if (Date.now() - sent.readAt > REMOVALS_TRUSTED_MS) return { state: await this.compile(tx, hostId, eq(portForwards.hostId, hostId)) };
      const state = await this.compile(tx, hostId, and(eq(portForwards.hostId, hostId), gt(portForwards.changedRevision, revision))!);
      const removed = (
        await tx
          .select({ id: portForwardRemovals.forwardId })
          .from(portForwardRemovals)
          .where(and(eq(portForwardRemovals.hostId, hostId), gt(portForwardRemovals.revision, revision)))
      )
        .map((r) => r.id)
        .filter((id) => sent.forwards.has(id));
      return { state, removed };
    });
  }

  private readOnly<T>(work: (tx: Executor) => Promise<T>): Promise<T> {
    return this.db.transaction(work, { isolationLevel: 'repeatable read', accessMode: 'read only' });
  }

  /** Compiles the host's state with the forwards `forwardFilter` selects (of those visible: not of an import being written). */
  private async compile(tx: Executor, hostId: string, forwardFilter: SQL): Promise<DesiredState> {
    const [host] = await tx.select().from(hosts).where(eq(hosts.id, hostId));
    if (!host) throw new NotFoundError('hostId', hostId, 'host');
    const instanceRows = await tx.select().from(instances).where(eq(instances.hostId, hostId));
    const instanceIds = instanceRows.map((i) => i.id);
    const nicRows = instanceIds.length ? await tx.select().from(nics).where(inArray(nics.instanceId, instanceIds)) : [];
    const nicIds = nicRows.map((n) => n.id);
    const addressRows = nicIds.length ? await tx.select().from(ipAllocations).where(inArray(ipAllocations.nicId, nicIds)) : [];
    const poolIds = [...new Set(addressRows.map((a) => a.poolId))];
    return compileDesiredState({
      host,
      instances: instanceRows,
      nics: nicRows,
      addresses: addressRows,
      pools: poolIds.length ? await tx.select().from(ipPools).where(inArray(ipPools.id, poolIds)) : [],
      firewallRules: instanceIds.length ? await tx.select().from(firewallRules).where(inArray(firewallRules.instanceId, instanceIds)) : [],
      bandwidth: instanceIds.length ? await tx.select().from(bandwidthLimits).where(inArray(bandwidthLimits.instanceId, instanceIds)) : [],
      throttledLimitIds: new Set(
        instanceIds.length
          ? (
              await tx
                .select({ id: trafficQuotaStates.limitId })
                .from(trafficQuotaStates)
                .where(and(inArray(trafficQuotaStates.instanceId, instanceIds), eq(trafficQuotaStates.throttled, true)))
            ).map((r) => r.id)
          : [],
      ),
      stoppedInstanceIds: await stoppedInstances(tx, hostId, instanceRows),
      // only the columns the document needs: all of them cost 5x more at 60,000 rows
      portForwards: await tx
        .select({
          id: portForwards.id,
          instanceId: portForwards.instanceId,
          protocol: portForwards.protocol,
          hostAddress: portForwards.hostAddress,
          hostPortStart: portForwards.hostPortStart,
          hostPortEnd: portForwards.hostPortEnd,
          targetAddress: portForwards.targetAddress,
          targetPortStart: portForwards.targetPortStart,
          sourceCidrs: portForwards.sourceCidrs,
          rateLimit: portForwards.rateLimit,
          balance: portForwards.balance,
          protoLo: portForwards.protoLo,
        })
        .from(portForwards)
        .where(and(forwardFilter, forwardIsVisible)),
    });
  }

  private authorize(actor: Actor, hostId: string): void {
    if (isAdmin(actor)) return;
    if (actor.scope === 'agent' && actor.hostId === hostId) return;
    throw new ForbiddenError(`the desired state of host ${hostId} is for admins and that host's agent token`, 'hostId', hostId);
  }
}

/**
 * The document a stream sent last, kept so that one change costs the stream in proportion to the
 * change, not to the host: its instances without their forwards, and its forwards by id. (As one
 * document, each patch applied to it copied and searched the forward list of the instance it
 * touched and scanned every forward of the host for the touched ones: 15-55 ms of this process's
 * event loop per change and per stream at 60,000 forwards, up to 145 ms at 250,000.)
 */
interface Sent {
  /** The document without forwards (every instance's `portForwards` empty). */
  headers: DesiredState;
  forwards: Map<string, { instanceId: string; forward: DesiredPortForward }>;
  /** When the state was read (Date.now()). */
  readAt: number;
}

function headersOnly(state: DesiredState): DesiredState {
  return { ...state, instances: state.instances.map((i) => ({ ...i, portForwards: [] })) };
}

function sent(state: DesiredState): Sent {
  const forwards = new Map<string, { instanceId: string; forward: DesiredPortForward }>();
  for (const instance of state.instances) for (const forward of instance.portForwards) forwards.set(forward.id, { instanceId: instance.id, forward });
  return { headers: headersOnly(state), forwards, readAt: Date.now() };
}

/** The whole document `sent` holds (forwards in no particular order: for `diffDesiredState`'s base only). */
function documentOf(sent: Sent): DesiredState {
  const lists = new Map<string, DesiredPortForward[]>(sent.headers.instances.map((i) => [i.id, []]));
  for (const { instanceId, forward } of sent.forwards.values()) lists.get(instanceId)?.push(forward);
  return { ...sent.headers, instances: sent.headers.instances.map((i) => ({ ...i, portForwards: lists.get(i.id)! })) };
}

/** `before` moved on by `patch` (its forward map updated in place: only its stream holds it). */
function advance(before: Sent, patch: DesiredStatePatch): Sent {
  const headers = applyDesiredStatePatch(before.headers, { ...patch, portForwards: [], removedPortForwards: [] }).state;
  const map = before.forwards;
  const goneInstances = new Set(patch.removedInstances);
  if (goneInstances.size > 0) for (const [id, f] of map) if (goneInstances.has(f.instanceId)) map.delete(id);
  for (const id of patch.removedPortForwards) map.delete(id);
  for (const f of patch.portForwards) map.set(f.forward.id, f);
  return { headers, forwards: map, readAt: Date.now() };
}

/**
 * The patch from what was sent to a state whose forwards are only those created or changed since,
 * `removed` the forwards deleted since: instance headers compared with the previous ones, every
 * forward of `changed` added or replaced, the removed ones of instances that stay removed.
 */
function patchFromChanged(before: Sent, changed: DesiredState, removed: readonly string[]): DesiredStatePatch {
  const patch = diffDesiredState(before.headers, headersOnly(changed));
  for (const instance of changed.instances) for (const forward of instance.portForwards) patch.portForwards.push({ instanceId: instance.id, forward });
  const goneInstances = new Set(patch.removedInstances);
  for (const id of removed) if (!goneInstances.has(before.forwards.get(id)!.instanceId)) patch.removedPortForwards.push(id);
  return patch;
}

/** The host's instances its agent last discovered not running (targets of balanced forwards left out). */
async function stoppedInstances(tx: Executor, hostId: string, rows: readonly { id: string; externalId: string | null }[]): Promise<Set<string>> {
  const [agent] = await tx.select({ discovered: hostAgents.discoveredInstances }).from(hostAgents).where(eq(hostAgents.hostId, hostId));
  const stopped = new Set((agent?.discovered ?? []).filter((d) => d.running === false).map((d) => d.externalId));
  return new Set(rows.filter((i) => i.externalId !== null && stopped.has(i.externalId)).map((i) => i.id));
}
