/**
 * Desired-state changes: after the first full document, a controller sends each new revision as
 * the difference from the previous one, so one new forward among 60,000 costs a few hundred bytes
 * to send, parse and check rather than a 12 MB document.
 *
 * Instances travel whole but without their port forwards (their NICs, firewall and bandwidth are
 * small); port forwards, the part that grows to tens of thousands, travel one by one. Applying a
 * patch to the document it was made from gives exactly the next document, in the same order
 * (`applyDesiredStatePatch(a, diffDesiredState(a, b))` deep-equals `b`).
 */
import {
  DriverConfigError,
  checkForward,
  checkInstanceHeader,
  checkPatchShape,
  markValid,
  validateDesiredState,
  type DesiredInstance,
  type DesiredPortForward,
  type DesiredState,
} from '@gatehouse/sdk';

/** An instance without its port forwards. */
export type DesiredInstanceHeader = Omit<DesiredInstance, 'portForwards'>;

/** How revision `revision` differs from `baseRevision`. */
export interface DesiredStatePatch {
  baseRevision: number;
  revision: number;
  /** Present when changed. */
  hostName?: string;
  publicAddresses?: string[];
  /** Instances added or changed (their forwards stay unless listed below). */
  instances: DesiredInstanceHeader[];
  /** Instances gone, with their forwards. */
  removedInstances: string[];
  /** Forwards added or changed, with the instance they belong to now. */
  portForwards: { instanceId: string; forward: DesiredPortForward }[];
  /** Forwards gone (of instances that stay). */
  removedPortForwards: string[];
}

/** One message of a desired-state stream: the full document, or a patch from the previous revision. */
export type DesiredStateMessage = { full: DesiredState; patch?: undefined } | { patch: DesiredStatePatch; full?: undefined };

const PROTOCOL_RANK = { tcp: 1, both: 1, udp: 2 } as const;

/** The order of forwards within an instance: host port, protocol (tcp and both before udp), id — the controller's order. */
export function compareForwards(a: DesiredPortForward, b: DesiredPortForward): number {
  return a.hostPorts.start - b.hostPorts.start || PROTOCOL_RANK[a.protocol] - PROTOCOL_RANK[b.protocol] || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  return a.length === b.length && a.every((x, i) => same(x, b[i]!));
}

function sameForward(a: DesiredPortForward, b: DesiredPortForward): boolean {
  return (
    a.protocol === b.protocol &&
    a.hostAddress === b.hostAddress &&
    a.hostPorts.start === b.hostPorts.start &&
    a.hostPorts.end === b.hostPorts.end &&
    a.targetAddress === b.targetAddress &&
    a.targetPorts.start === b.targetPorts.start &&
    a.targetPorts.end === b.targetPorts.end &&
    sameList(a.sourceCidrs, b.sourceCidrs, (x, y) => x === y) &&
    JSON.stringify(a.rateLimit ?? null) === JSON.stringify(b.rateLimit ?? null) &&
    JSON.stringify(a.balance ?? null) === JSON.stringify(b.balance ?? null)
  );
}

function header({ portForwards: _, ...rest }: DesiredInstance): DesiredInstanceHeader {
  return rest;
}

/** The patch that turns `from` into `to` (two documents of the same host). */
export function diffDesiredState(from: DesiredState, to: DesiredState): DesiredStatePatch {
  const patch: DesiredStatePatch = {
    baseRevision: from.revision,
    revision: to.revision,
    instances: [],
    removedInstances: [],
    portForwards: [],
    removedPortForwards: [],
  };
  if (from.hostName !== to.hostName) patch.hostName = to.hostName;
  if (!sameList(from.publicAddresses, to.publicAddresses, (a, b) => a === b)) patch.publicAddresses = to.publicAddresses;
  const before = new Map(from.instances.map((i) => [i.id, i]));
  const oldForwards = new Map<string, { instanceId: string; forward: DesiredPortForward }>();
  for (const i of from.instances) for (const f of i.portForwards) oldForwards.set(f.id, { instanceId: i.id, forward: f });
  const kept = new Set<string>();
  for (const instance of to.instances) {
    const was = before.get(instance.id);
    // headers are small: compared as JSON
    if (!was || JSON.stringify(header(was)) !== JSON.stringify(header(instance))) patch.instances.push(header(instance));
    for (const forward of instance.portForwards) {
      kept.add(forward.id);
      const old = oldForwards.get(forward.id);
      if (!old || old.instanceId !== instance.id || !sameForward(old.forward, forward)) patch.portForwards.push({ instanceId: instance.id, forward });
    }
  }
  const after = new Set(to.instances.map((i) => i.id));
  for (const id of before.keys()) if (!after.has(id)) patch.removedInstances.push(id);
  for (const [id, old] of oldForwards) if (!kept.has(id) && after.has(old.instanceId)) patch.removedPortForwards.push(id);
  return patch;
}

/** Whether a patch changes nothing but the revision. */
export function patchIsEmpty(patch: DesiredStatePatch): boolean {
  return (
    patch.hostName === undefined &&
    patch.publicAddresses === undefined &&
    patch.instances.length + patch.removedInstances.length + patch.portForwards.length + patch.removedPortForwards.length === 0
  );
}

/**
 * Checks `patch` (throws DriverConfigError naming the field) and applies it to `base`, which must
 * be the document at `patch.baseRevision`. Returns the next document — a new object sharing the
 * unchanged parts of `base`, which must not be changed afterwards — and the ids of the objects
 * (instances, NICs, firewall rules, bandwidth limits, forwards) the patch added, changed or removed.
 */
export function applyDesiredStatePatch(base: DesiredState, value: unknown, path = 'patch'): { state: DesiredState; changed: Set<string> } {
  validateDesiredState(base, 'base');
  checkPatchShape(value, path);
  const patch = value as DesiredStatePatch;
  if (patch.baseRevision !== base.revision)
    throw new DriverConfigError(`${path}.baseRevision`, patch.baseRevision, `is not the revision held here (${base.revision})`);
  if (patch.revision <= base.revision) throw new DriverConfigError(`${path}.revision`, patch.revision, `must be above baseRevision ${base.revision}`);
  patch.instances.forEach((h, n) => checkInstanceHeader(h, `${path}.instances[${n}]`));
  patch.portForwards.forEach((f, n) => checkForward(f.forward, `${path}.portForwards[${n}].forward`));

  const changed = new Set<string>();
  const instances = new Map(base.instances.map((i) => [i.id, i]));
  const removed = new Set(patch.removedInstances);
  const goneForwards: string[] = [];
  for (const id of removed) {
    const gone = instances.get(id);
    if (!gone) continue;
    changed.add(id);
    for (const f of gone.portForwards) {
      changed.add(f.id);
      goneForwards.push(f.id);
    }
    instances.delete(id);
  }
  for (const h of patch.instances) {
    const was = instances.get(h.id);
    changed.add(h.id);
    for (const x of [...h.nics, ...h.firewall.rules, ...h.bandwidth]) changed.add(x.id);
    // objects that left with the old header count as changed too
    if (was) for (const x of [...was.nics, ...was.firewall.rules, ...was.bandwidth]) changed.add(x.id);
    instances.set(h.id, { ...h, portForwards: was?.portForwards ?? [] });
  }
  // forwards: find where each touched one is now (the base's index), then rebuild only the instances concerned
  const index = takeIndex(base);
  for (const id of goneForwards) index.delete(id);
  const lists = new Map<string, DesiredPortForward[]>();
  const listOf = (instanceId: string, at: string): DesiredPortForward[] => {
    let list = lists.get(instanceId);
    if (!list) {
      const instance = instances.get(instanceId);
      if (!instance) throw new DriverConfigError(at, instanceId, 'is not an instance of this document');
      list = instance.portForwards.slice(); // a copy at memory speed (a spread of 250,000 items walks an iterator)
      lists.set(instanceId, list);
    }
    return list;
  };
  const remove = (id: string) => {
    const where = index.get(id);
    if (where === undefined) return;
    index.delete(id);
    const list = listOf(where.instanceId, 'patch');
    // the forward's place in the controller's order, else (a list in another order) a search
    let at = placeOf(list, where.forward);
    if (list[at]?.id !== id) at = list.findIndex((f) => f.id === id);
    if (at >= 0) list.splice(at, 1);
  };
  for (const id of patch.removedPortForwards) {
    remove(id);
    changed.add(id);
  }
  patch.portForwards.forEach(({ instanceId, forward }, n) => {
    const list = listOf(instanceId, `${path}.portForwards[${n}].instanceId`);
    remove(forward.id);
    list.splice(placeOf(list, forward), 0, forward);
    index.set(forward.id, { instanceId, forward });
    changed.add(forward.id);
  });
  for (const [id, list] of lists) instances.set(id, { ...instances.get(id)!, portForwards: list });

  const state: DesiredState = {
    ...base,
    revision: patch.revision,
    hostName: patch.hostName ?? base.hostName,
    publicAddresses: patch.publicAddresses ?? base.publicAddresses,
    instances: [...instances.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  };
  markValid(state);
  // the base's index now describes the next document, which the next patch applies to
  forwardIndexes.set(state, index);
  return { state, changed };
}

/** Where each forward of a document is: its instance and the forward itself, by forward id. */
type ForwardIndex = Map<string, { instanceId: string; forward: DesiredPortForward }>;

/**
 * The forward index of each patched document, handed from a document to the one patched from it,
 * so that a patch touching a few forwards costs the same among 60,000 as among 10 (only the first
 * patch of a full document builds one).
 */
const forwardIndexes = new WeakMap<DesiredState, ForwardIndex>();

/**
 * The index of `base`, taken from it (changed into the next document's by the caller; a second
 * patch of the same base, or one that failed half-way, builds it again).
 */
function takeIndex(base: DesiredState): ForwardIndex {
  const held = forwardIndexes.get(base);
  if (held) {
    forwardIndexes.delete(base);
    return held;
  }
  const index: ForwardIndex = new Map();
  for (const i of base.instances) for (const forward of i.portForwards) index.set(forward.id, { instanceId: i.id, forward });
  return index;
}

/** Where `forward` goes in a list in the controller's order (binary search: the first place not before it). */
function placeOf(list: readonly DesiredPortForward[], forward: DesiredPortForward): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareForwards(list[mid]!, forward) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
