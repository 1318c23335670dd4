/**
 * Loads a host's desired state in one consistent snapshot and streams new revisions as they
 * commit. Every change bumps the host's revision in its own transaction, so a document read
 * under REPEATABLE READ is exactly the state at the revision it carries.
 */
import { diffDesiredState, type DesiredState, type DesiredStateMessage } from '@gatehouse/sdk';
import { eq, inArray } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { bandwidthLimits, firewallRules, hosts, instances, ipAllocations, ipPools, nics, portForwards } from '../db/schema.js';
import { compileDesiredState } from '../desired-state/compile.js';
import { ForbiddenError, NotFoundError } from '../errors.js';
import type { EventBus } from '../events.js';
import { DatabaseToken, EventBusToken } from '../tokens.js';
import { relay } from '../streams.js';
import { validId } from '../validate.js';

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
    return new Repeater<DesiredState>(async (push, stop) => {
      // subscribe before the first read, so no revision committed in between is missed
      const changes = this.events.subscribe('hostRevision')[Symbol.asyncIterator]();
      let stopped = false;
      let dirty = true;
      let reading = false;
      let sent = -1;
      const drain = async () => {
        if (reading) return;
        reading = true;
        try {
          while (dirty && !stopped) {
            dirty = false;
            const state = await this.load(id);
            if (state.revision > sent) {
              sent = state.revision;
              await push(state);
            }
          }
        } catch (err) {
          stop(err);
        } finally {
          reading = false;
        }
      };
      void drain();
      void (async () => {
        for (;;) {
          const next = await changes.next();
          if (next.done || stopped) return;
          if (next.value.hostId !== id) continue;
          dirty = true;
          void drain();
        }
      })();
      await stop;
      stopped = true;
      await changes.return?.();
    });
  }

  /**
   * As `stream`, but after the first full document each revision comes as a patch from the one
   * sent before (see @gatehouse/sdk patch.ts): what agents subscribe to, so one change among
   * 60,000 forwards is a few hundred bytes to send, parse and check rather than the whole document.
   */
  changes(actor: Actor, hostId: string): AsyncIterable<DesiredStateMessage & { hostId: string; revision: number; apiVersion: number }> {
    const states = this.stream(actor, hostId)[Symbol.asyncIterator]();
    // a Repeater, not an async generator: its return() must end a subscription that waits for a
    // revision (a generator's return() would queue behind that wait, and the agent stay online)
    return new Repeater(async (push, stop) => {
      let previous: DesiredState | undefined;
      relay(states, push, stop, (state: DesiredState) => {
        const message: DesiredStateMessage = previous ? { patch: diffDesiredState(previous, state) } : { full: state };
        previous = state;
        return { ...message, hostId: state.hostId, revision: state.revision, apiVersion: state.apiVersion };
      });
      await stop;
      await states.return?.();
    });
  }

  /** Reads and compiles the state in one REPEATABLE READ transaction. */
  async load(hostId: string): Promise<DesiredState> {
    return this.db.transaction(
      async (tx) => {
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
              protoLo: portForwards.protoLo,
            })
            .from(portForwards)
            .where(eq(portForwards.hostId, hostId)),
        });
      },
      { isolationLevel: 'repeatable read', accessMode: 'read only' },
    );
  }

  private authorize(actor: Actor, hostId: string): void {
    if (isAdmin(actor)) return;
    if (actor.scope === 'agent' && actor.hostId === hostId) return;
    throw new ForbiddenError(`the desired state of host ${hostId} is for admins and that host's agent token`, 'hostId', hostId);
  }
}
