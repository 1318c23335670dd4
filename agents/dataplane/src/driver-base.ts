/**
 * The shared base of dataplane-backed drivers, as Incus' network drivers share one common base:
 * everything a driver does through the Linux dataplane (the nftables transaction and its
 * per-object results, tc shaping on each NIC's host-side interface, observe, drift, stats,
 * release and gc of the table) lives here once. A driver built on it supplies only what differs
 * between backends: `discover`, how the instances' NICs are made to exist and where each one's
 * host-side interface is (`placeNics`, `locateNics`), and what it made on the backend that
 * release and gc take back (`releaseHost`, `gcHost`).
 *
 * Apply runs in a fixed order: NICs first (forwards and firewalls are keyed on addresses, shaping
 * needs the host side), then the nft transaction (whatever the backend's state: instances keep
 * running while their daemon is away), then shaping.
 */
import {
  DRIVER_API_VERSION,
  HostUnreachableError,
  TransientError,
  run,
  sortObservation,
  toDriverError,
  validateDesiredState,
  type DiagnoseForwardInput,
  type ForwardDiagnosis,
  type ApplyResult,
  type DesiredInstance,
  type DesiredPortForward,
  type DesiredState,
  type DiscoveredInstance,
  type DriverCapabilities,
  type DriverContext,
  type DriverError,
  type ExecTarget,
  type NetworkDriver,
  type ObjectResult,
  type ObservedState,
  type StatsPart,
  type StatsResult,
} from '@gatehouse/sdk';
import { Dataplane } from './dataplane.js';
import { diagnoseForward, type DiagnosisContext } from './diagnose.js';
import { nicCounters, observeShaping, shapingDifferences, shapingFor, type NicPlacement } from './nics.js';
import { applyShaping, type ShapingSpec } from './tc.js';

/** What every dataplane-backed driver can do: forwards, firewalls and shaping all through the dataplane. */
export const DATAPLANE_CAPABILITIES: DriverCapabilities = {
  portForwards: {
    implementation: 'dataplane',
    protocols: ['tcp', 'udp'],
    portRanges: true,
    ipv6: true,
    sourceAllowLists: true,
    rateLimits: true,
    multiTarget: true,
  },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: { implementation: 'dataplane', ingress: true, egress: true, burst: true },
  nics: { max: 32, hotplug: true, staticAddressing: true },
};

/** The dataplane's capabilities narrowed for one backend: `ipv6: false` for forwards and firewalls, and its NIC limits. */
export function dataplaneCapabilities(narrowed: { ipv6?: boolean; nics?: Partial<DriverCapabilities['nics']> } = {}): DriverCapabilities {
  const { portForwards, firewall, shaping, nics } = DATAPLANE_CAPABILITIES;
  const ipv6 = narrowed.ipv6 ?? true;
  return { portForwards: { ...portForwards!, ipv6 }, firewall: { ...firewall!, ipv6 }, shaping, nics: { ...nics, ...narrowed.nics } };
}

/** What a driver's host-side step made of the desired instances. */
export interface HostSide<P extends NicPlacement> {
  /** Whether anything on the host or the backend changed. */
  changed: boolean;
  /** Where each NIC that is on this host is. */
  places: P[];
  /** Errors that fail every object of one instance (its container is gone, its daemon unreachable), by instance id. */
  instanceErrors: Map<string, DriverError>;
  /** Errors that fail one NIC, by NIC id. A NIC with neither a place nor an error fails as not on this host. */
  nicErrors: Map<string, DriverError>;
}

/** Options of the base. */
export interface DataplaneDriverOptions {
  /**
   * Reuse the last apply's host side (NICs and shaping) when no instance, NIC or limit changed and
   * it applied fully, so that only the nft transaction runs: what keeps one new forward among
   * 60,000 at tens of milliseconds. Only for backends whose NICs stay where they were put
   * (drift checks and repairs cover the rest).
   */
  reuseHostSide?: boolean;
  /**
   * Keep per-instance counters of forwarded traffic in the table (`this.dataplane.counters().instances`),
   * e.g. for a `nicStats` that reads them. Off by default: they cost a lookup per forwarded packet.
   */
  instanceCounters?: boolean;
}

/** The base class: extend it, give `id` and `capabilities`, and implement the abstract methods. */
export abstract class DataplaneDriver<P extends NicPlacement = NicPlacement> implements NetworkDriver {
  abstract readonly id: string;
  abstract readonly capabilities: DriverCapabilities;
  readonly apiVersion = DRIVER_API_VERSION;
  /** The nftables dataplane, in the namespace the driver's host commands run in. */
  protected readonly dataplane: Dataplane;
  /** Where the NICs were after the last apply, so drift can tell that one moved or went. */
  protected lastPlaces: P[] = [];
  /** With `reuseHostSide`: the host side of the last apply that placed every NIC and limit. */
  private lastHostSide: { key: string; results: ObjectResult[] } | undefined;
  /**
   * Per instance, its forwards at the last table apply and their results, with its NICs and their
   * placement then: an apply with the same NICs and placement reuses the results of the forwards it
   * shares (a patched document shares the unchanged ones' objects), instead of making a result for
   * each of 250,000 forwards per change.
   */
  private lastForwardResults = new Map<
    string,
    { placement: string; nics: DesiredInstance['nics']; forwards: readonly DesiredPortForward[]; results: readonly ObjectResult[] }
  >();

  /** `host`: where host commands (nft, tc, ip) run, the agent's own namespace by default. */
  constructor(
    protected readonly host: ExecTarget,
    private readonly options: DataplaneDriverOptions = {},
  ) {
    this.dataplane = new Dataplane(host, { instanceCounters: options.instanceCounters ?? false });
  }

  /** Instances on the host with their NICs. Read-only. */
  abstract discover(ctx: DriverContext, input: Record<string, never>): Promise<{ instances: DiscoveredInstance[] }>;

  /**
   * Makes every desired NIC exist on its instance (and takes back what the driver made for NICs
   * and instances no longer desired); says where each NIC is and what failed. Throws only when
   * nothing of the apply can proceed.
   */
  protected abstract placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<P>>;

  /**
   * The first steps of an API-backed `placeNics`: reads the backend's inventory and takes back what
   * the driver made on instances no longer desired. The backend unreachable: every desired
   * instance fails with that error and `inventory` is undefined — return `side` as it is, so the
   * nftables table is still applied (instances keep running while their API is away). A failed
   * take-back is logged, not fatal: what is left over goes at the next apply.
   */
  protected async readBackend<T>(
    ctx: DriverContext,
    desired: DesiredState,
    backend: string,
    steps: { read: () => Promise<T>; removeStale: (inventory: T) => Promise<boolean> },
  ): Promise<{ side: HostSide<P>; inventory: T | undefined }> {
    const side: HostSide<P> = { changed: false, places: [], instanceErrors: new Map(), nicErrors: new Map() };
    let inventory: T;
    try {
      inventory = await steps.read();
    } catch (err) {
      if (!(err instanceof HostUnreachableError)) throw err;
      ctx.logger.warn(`${backend} is unreachable; applying the nftables table only`, { error: err.message });
      for (const instance of desired.instances) side.instanceErrors.set(instance.id, err);
      return { side, inventory: undefined };
    }
    try {
      side.changed = await steps.removeStale(inventory);
    } catch (err) {
      ctx.logger.warn(`could not remove what Gatehouse left on ${backend} instances no longer desired`, { error: toDriverError(err).message });
    }
    return { side, inventory };
  }

  /** Takes back what was made on every tagged backend instance whose tag `takeBack` accepts; returns those tags. */
  private async disownTagged(ctx: DriverContext, takeBack: (owner: string) => boolean): Promise<string[]> {
    const owners: string[] = [];
    for (const { owner, disown } of await this.taggedInstances(ctx)) {
      if (owner === undefined || !takeBack(owner)) continue;
      await disown();
      owners.push(owner);
    }
    return owners;
  }

  /** Where each desired NIC is now, without changing anything (absent instances have none). */
  protected abstract locateNics(ctx: DriverContext, desired: DesiredState): Promise<P[]>;

  /**
   * Removes what the driver made on the host or backend for one instance, beyond the table; true
   * when anything was there. By default: what `taggedInstances` marks as that instance's.
   */
  protected async releaseHost(ctx: DriverContext, instanceId: string): Promise<boolean> {
    return (await this.disownTagged(ctx, (owner) => owner === instanceId)).length > 0;
  }

  /**
   * Removes what the driver made for instances not in `valid`, beyond the table; returns what went,
   * in words or ids. By default: what `taggedInstances` marks as another instance's.
   */
  protected async gcHost(ctx: DriverContext, valid: readonly string[]): Promise<string[]> {
    const keep = new Set(valid);
    return this.disownTagged(ctx, (owner) => !keep.has(owner));
  }

  /**
   * For backends that tag what they own with the Gatehouse instance id (LXD config keys, PVE tags,
   * vSphere extraConfig): every backend instance with its tag and how to take back what Gatehouse
   * made on it. Found by tags, not memory, so a fresh process releases what an earlier one made.
   * None by default.
   */
  protected async taggedInstances(_ctx: DriverContext): Promise<{ owner: string | undefined; disown: () => Promise<void> }[]> {
    return [];
  }

  /** Converges NICs, forwards, firewalls and shaping to `desired`; idempotent. `repair` rebuilds the table and the host side. */
  async apply(ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult> {
    const desired = validateDesiredState(input.desired, 'input.desired');
    const key = this.options.reuseHostSide ? hostSideKey(desired) : undefined;
    if (!input.repair && key !== undefined && this.lastHostSide?.key === key) {
      const results = [...this.lastHostSide.results];
      const noErrors = new Map<string, DriverError>();
      const changed = await this.applyTable(
        ctx,
        desired,
        { changed: false, places: this.lastPlaces, instanceErrors: noErrors, nicErrors: noErrors },
        false,
        results,
      );
      return { changed, objects: results };
    }
    this.lastHostSide = undefined;
    const side = await this.placeNics(ctx, desired);
    let changed = side.changed;
    const results: ObjectResult[] = [];
    for (const instance of desired.instances) {
      for (const nic of instance.nics) {
        const error =
          side.instanceErrors.get(instance.id) ??
          side.nicErrors.get(nic.id) ??
          (side.places.some((p) => p.nicId === nic.id)
            ? undefined
            : new TransientError(`instance ${instance.name}: NIC ${nic.name} (${nic.mac}) is not on this host`));
        results.push(outcome('nic', nic.id, error));
      }
    }
    if (desired.instances.length > 0) await this.prepareHost(ctx, desired);
    changed = (await this.applyTable(ctx, desired, side, input.repair ?? false, results)) || changed;
    changed = (await this.applyLimits(ctx, desired, side, results)) || changed;
    this.lastPlaces = side.places;
    const hostResults = results.filter((r) => r.objectType === 'nic' || r.objectType === 'bandwidth_limit');
    if (key !== undefined && hostResults.every((r) => r.status === 'applied')) this.lastHostSide = { key, results: hostResults };
    return { changed, objects: results };
  }

  /** Forwards and firewalls from the live table; shaping of each desired NIC's host-side interface (given `desired`). */
  async observe(ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ObservedState }> {
    const { forwards, firewalls } = await this.dataplane.observe();
    const shaping = input.desired ? await observeShaping(await this.locateNics(ctx, input.desired), this.host) : [];
    return { state: sortObservation({ forwards, firewalls: firewalls.map(({ unrecognized: _, ...f }) => f), shaping }) };
  }

  /** Per-forward counters from the table (epoch: the counter sets' handles); per NIC (given `desired`) what `nicStats` reads. */
  async stats(ctx: DriverContext, input: { desired?: DesiredState; parts?: readonly StatsPart[] }): Promise<StatsResult> {
    const parts = new Set<StatsPart>(input.parts ?? ['nics', 'forwards']);
    let forwards: StatsResult['forwards'] = [];
    if (parts.has('forwards')) {
      const counters = await this.dataplane.counters();
      forwards = [...counters.forwards].map(([forwardId, counter]) => {
        const rateLimited = counters.rateLimited.get(forwardId);
        return { forwardId, counter, epoch: counters.forwardEpoch, ...(rateLimited !== undefined ? { rateLimited } : {}) };
      });
    }
    return { nics: input.desired && parts.has('nics') ? await this.nicStats(ctx, input.desired) : [], forwards };
  }

  /**
   * The forward diagnosis (diagnose.ts) on this host, with what the backend says of the target
   * instance: stopped (`discover`'s `running: false`, found by external id, else name) or its NICs
   * not on the host (`locateNics`).
   */
  async diagnoseForward(ctx: DriverContext, input: DiagnoseForwardInput): Promise<ForwardDiagnosis> {
    const instance = input.desired.instances.find((i) => i.portForwards.some((f) => f.id === input.forwardId));
    const context: DiagnosisContext = {};
    if (instance) {
      const discovered = await this.discover(ctx, {}).then(
        (d) => d.instances,
        () => [],
      );
      const seen = discovered.find((d) => (instance.externalId ? d.externalId === instance.externalId : d.name === instance.name));
      if (seen?.running !== undefined) context.instanceRunning = seen.running;
      const places = await this.locateNics(ctx, { ...input.desired, instances: [instance] }).catch(() => undefined);
      if (places !== undefined) context.nicsOnHost = places.some((p) => p.instanceId === instance.id);
    }
    return diagnoseForward(this.host, input.desired, input.forwardId, input.sourceAddress, context);
  }

  /** Removes one instance's table entries and what `releaseHost` takes back; succeeds when already gone. */
  async release(ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
    this.lastHostSide = undefined; // the host side changes: the next apply re-checks it
    let released = await this.dataplane.release(input.instanceId);
    released = (await this.releaseHost(ctx, input.instanceId)) || released;
    this.lastPlaces = this.lastPlaces.filter((p) => p.instanceId !== input.instanceId);
    return { released };
  }

  /** Removes what belongs to instances not in `validInstanceIds` (the table's, then `gcHost`'s), and nothing else. */
  async gc(ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }> {
    this.lastHostSide = undefined;
    const removed = new Set(await this.dataplane.gc(input.validInstanceIds));
    for (const what of await this.gcHost(ctx, input.validInstanceIds)) removed.add(what);
    const valid = new Set(input.validInstanceIds);
    this.lastPlaces = this.lastPlaces.filter((p) => valid.has(p.instanceId));
    return { removedInstanceIds: [...removed] };
  }

  /** Ends the dataplane's long-lived nft process; an override frees its own resources and calls this too. */
  async close(): Promise<void> {
    await this.dataplane.close();
  }

  /**
   * How the host differs from the last apply, in words: the table (map elements only when
   * `thorough`), NICs that moved to other interfaces or appeared, and each NIC's shaping. A
   * backend that cannot be reached is no drift of ours (applies already fail and are retried).
   * `ctx.signal` stops the table's listing. A driver offers it as its `drift` method.
   */
  protected async driftSinceApply(ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    const differences = (await this.dataplane.drift({ elements: input.thorough, signal: ctx.signal })) ?? [];
    let live: P[];
    try {
      live = await this.locateNics(ctx, input.desired);
    } catch (err) {
      if (err instanceof HostUnreachableError) return { differences };
      throw err;
    }
    const where = (p: P) => `${p.nicId} ${p.hostInterface}`;
    const before = new Set(this.lastPlaces.map(where));
    const now = new Set(live.map(where));
    for (const p of this.lastPlaces) if (!now.has(where(p))) differences.push(`NIC ${p.nicId} is no longer on ${p.hostInterface}`);
    for (const p of live) if (!before.has(where(p))) differences.push(`NIC ${p.nicId} is now on ${p.hostInterface}`);
    differences.push(...(await shapingDifferences(live, input.desired, this.host)));
    return { differences };
  }

  /** Before the table: routing between the public side and the instances (IPv4 always, IPv6 when an instance has an IPv6 address). */
  protected async prepareHost(_ctx: DriverContext, desired: DesiredState): Promise<void> {
    const v6 = desired.instances.some((i) => i.nics.some((n) => n.addresses.some((a) => a.address.includes(':'))));
    for (const key of ['net.ipv4.ip_forward', ...(v6 ? ['net.ipv6.conf.all.forwarding'] : [])]) {
      const now = (await run('sysctl', ['-n', key], this.host)).trim();
      if (now !== '1') await run('sysctl', ['-q', '-w', `${key}=1`], this.host);
    }
  }

  /**
   * Why a forward (or, without `forward`, a firewall rule) of an instance whose table entries are
   * installed cannot work: by default, when the instance has NICs and none is on this host.
   */
  protected unreachable(instance: DesiredInstance, placed: readonly P[], _forward?: DesiredPortForward): DriverError | undefined {
    if (instance.nics.length === 0 || placed.length > 0) return undefined;
    return new TransientError(`instance ${instance.name} (${instance.externalId ?? 'no external id'}) is not on this host`);
  }

  /** Throws when the NICs a limit would shape cannot carry it (the backend shapes them itself, say). */
  protected checkShapingTargets(_instance: DesiredInstance, _targets: readonly P[]): void {}

  /** Shapes one NIC's host-side interface (null: a limit without rates, no shaping); returns whether anything changed. */
  protected async shapeNic(place: P, spec: ShapingSpec | null): Promise<boolean> {
    return (await applyShaping({ iface: place.hostInterface, spec }, this.host)).changed;
  }

  /**
   * After shaping: removes the driver's shaping where no limit wants it any more (`shaped`: the
   * interfaces this apply shaped). By default, from each placed NIC without a limit.
   */
  protected async clearShaping(ctx: DriverContext, desired: DesiredState, side: HostSide<P>, _shaped: ReadonlySet<string>): Promise<boolean> {
    let changed = false;
    for (const instance of desired.instances) {
      if (side.instanceErrors.has(instance.id)) continue;
      for (const place of side.places.filter((p) => p.instanceId === instance.id && shapingFor(instance, p.nicId) === null)) {
        try {
          changed = (await applyShaping({ iface: place.hostInterface, spec: null }, this.host)).changed || changed;
        } catch (err) {
          ctx.logger.warn('could not remove shaping from a NIC without a limit', { iface: place.hostInterface, error: toDriverError(err).message });
        }
      }
    }
    return changed;
  }

  /** Per-NIC counters for `stats`: by default each located NIC's host-side interface counters, turned to the instance's view. */
  protected async nicStats(ctx: DriverContext, desired: DesiredState): Promise<StatsResult['nics']> {
    const nics: StatsResult['nics'] = [];
    for (const place of await this.locateNics(ctx, desired)) {
      const counters = await nicCounters(place.hostInterface, this.host);
      if (counters) nics.push({ instanceId: place.instanceId, nicId: place.nicId, ...counters });
    }
    return nics;
  }

  /** The nft transaction and the results of forwards and firewall rules; true when the table changed. */
  private async applyTable(ctx: DriverContext, desired: DesiredState, side: HostSide<P>, force: boolean, results: ObjectResult[]): Promise<boolean> {
    let changed: boolean;
    try {
      changed = (await this.dataplane.apply(desired, { force })).changed;
    } catch (err) {
      const error = toDriverError(err);
      ctx.logger.error('nftables transaction failed; the previous ruleset stays', { error: error.message });
      for (const instance of desired.instances) {
        for (const f of instance.portForwards) results.push(outcome('port_forward', f.id, error));
        for (const r of instance.firewall.rules) results.push(outcome('firewall_rule', r.id, error));
      }
      this.lastForwardResults = new Map();
      return false;
    }
    // installed either way, but an instance that is not here cannot be reached through them
    const kept: typeof this.lastForwardResults = new Map();
    for (const instance of desired.instances) {
      const instanceError = side.instanceErrors.get(instance.id);
      const placed = side.places.filter((p) => p.instanceId === instance.id);
      const result = (f: DesiredPortForward) => outcome('port_forward', f.id, instanceError ?? this.unreachable(instance, placed, f));
      // a forward's result depends on it, its instance's NICs and where they are: the same three, the same result
      const placement = instanceError ? undefined : placed.map((p) => `${p.nicId} ${p.hostInterface}`).join(',');
      const last = this.lastForwardResults.get(instance.id);
      const forwardResults =
        placement !== undefined && last?.placement === placement && last.nics === instance.nics
          ? resultsReused(last.forwards, last.results, instance.portForwards, result)
          : instance.portForwards.map(result);
      for (const r of forwardResults) results.push(r);
      if (placement !== undefined) kept.set(instance.id, { placement, nics: instance.nics, forwards: instance.portForwards, results: forwardResults });
      for (const r of instance.firewall.rules) results.push(outcome('firewall_rule', r.id, instanceError ?? this.unreachable(instance, placed)));
    }
    this.lastForwardResults = kept;
    return changed;
  }

  /** Shaping on each NIC's host-side interface, the NIC's own limit else the instance-wide one; true when anything changed. */
  private async applyLimits(ctx: DriverContext, desired: DesiredState, side: HostSide<P>, results: ObjectResult[]): Promise<boolean> {
    let changed = false;
    const shaped = new Set<string>();
    for (const instance of desired.instances) {
      for (const limit of instance.bandwidth) {
        try {
          const instanceError = side.instanceErrors.get(instance.id);
          if (instanceError) throw instanceError;
          const targets = side.places.filter((p) => p.instanceId === instance.id && (limit.nicId === null || p.nicId === limit.nicId));
          if (targets.length === 0) throw new TransientError(`instance ${instance.name} has no NIC on this host to shape`);
          this.checkShapingTargets(instance, targets);
          for (const place of targets) {
            changed = (await this.shapeNic(place, shapingFor(instance, place.nicId))) || changed;
            shaped.add(place.hostInterface);
          }
          results.push(outcome('bandwidth_limit', limit.id));
        } catch (err) {
          results.push(outcome('bandwidth_limit', limit.id, toDriverError(err)));
        }
      }
    }
    return (await this.clearShaping(ctx, desired, side, shaped)) || changed;
  }
}

/**
 * The results of `forwards`, taking those of the forwards at the same place from either end of
 * `before` (the same objects) from `beforeResults`, and making the others with `make`.
 */
export function resultsReused(
  before: readonly DesiredPortForward[],
  beforeResults: readonly ObjectResult[],
  forwards: readonly DesiredPortForward[],
  make: (f: DesiredPortForward) => ObjectResult,
): ObjectResult[] {
  const out = new Array<ObjectResult>(forwards.length);
  let start = 0;
  while (start < forwards.length && start < before.length && forwards[start] === before[start]) {
    out[start] = beforeResults[start]!;
    start++;
  }
  let end = forwards.length;
  let endBefore = before.length;
  while (end > start && endBefore > start && forwards[end - 1] === before[endBefore - 1]) {
    out[end - 1] = beforeResults[endBefore - 1]!;
    end--;
    endBefore--;
  }
  for (let i = start; i < end; i++) out[i] = make(forwards[i]!);
  return out;
}

/** An object's result: applied, or failed with `error`. */
function outcome(objectType: ObjectResult['objectType'], objectId: string, error?: DriverError): ObjectResult {
  return error ? { objectType, objectId, status: 'failed', error: error.toJSON() } : { objectType, objectId, status: 'applied' };
}

/** Everything of a desired state that the host side (NICs, addresses, routing, shaping) depends on. */
function hostSideKey(desired: DesiredState): string {
  return JSON.stringify([desired.publicAddresses, desired.instances.map((i) => [i.id, i.name, i.externalId, i.nics, i.bandwidth])]);
}
