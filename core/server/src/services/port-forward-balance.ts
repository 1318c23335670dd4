/**
 * One public port, several targets: the targets of a balanced forward as a client gives them
 * (`targets` of createPortForward / updatePortForward, the CSV's `targets` column), checked
 * against the forward's own instance and target, and what of them goes into the desired state.
 *
 * Every target is an address of an instance of the forward's owner on the forward's host, of the
 * forward's address family, listed once, with a weight of 1 to 100; the forward's own target is one
 * of them; 1 to 16 targets. A list of the own target alone is no balance (stored as null).
 */
import type { DesiredBalance } from '@gatehouse/sdk';
import type { Executor } from '../db/database.js';
import type { ForwardBalanceJson } from '../db/schema.js';
import { ValidationError } from '../support/errors.js';
import type { Actor } from '../auth/actor.js';
import { instanceTarget, loadOwnedInstance, type Instance, type InstanceTarget } from './ownership.js';

/** A target as a client names it. */
export interface TargetSpec {
  instanceId: string;
  /** An address of that instance; absent: its first IPv4 address (else its first). */
  targetAddress?: string | null;
  /** Share of new connections, 1-100; absent: 1. */
  weight?: number | null;
}

/** Most targets of one forward. */
export const MAX_TARGETS = 16;
/** Highest weight of one target. */
export const MAX_WEIGHT = 100;

/** Checks a weight (absent: 1). */
export function validWeight(field: string, weight: number | null | undefined): number {
  if (weight == null) return 1;
  if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) throw new ValidationError(field, weight, `must be an integer from 1 to ${MAX_WEIGHT}`);
  return weight;
}

/** A target found for one entry of a list, with its weight. */
export interface ResolvedTarget {
  target: InstanceTarget;
  weight: number;
}

/**
 * The stored balance for `specs` (null: the own target alone). `field` names the list
 * (`input.targets`); each entry's instance must be the actor's (NOT_FOUND otherwise).
 */
export async function resolveBalance(
  tx: Executor,
  actor: Actor,
  own: { instance: Instance; target: InstanceTarget },
  specs: readonly TargetSpec[],
  sourceAffinity: boolean,
  field: string,
): Promise<ForwardBalanceJson | null> {
  countCheck(field, specs.length);
  const resolved: ResolvedTarget[] = [];
  for (const [i, spec] of specs.entries()) {
    const at = `${field}[${i}]`;
    const instance = spec.instanceId === own.instance.id ? own.instance : await loadOwnedInstance(tx, actor, `${at}.instanceId`, spec.instanceId);
    if (instance.hostId !== own.instance.hostId) {
      throw new ValidationError(`${at}.instanceId`, spec.instanceId, `is instance "${instance.name}" on another host than the forward's`);
    }
    resolved.push({ target: await instanceTarget(tx, instance, at, spec.targetAddress), weight: validWeight(`${at}.weight`, spec.weight) });
  }
  return checkedBalance(own.target, resolved, sourceAffinity, field);
}

function countCheck(field: string, count: number): void {
  if (count === 0 || count > MAX_TARGETS) throw new ValidationError(field, `${count} targets`, `must list 1 to ${MAX_TARGETS} targets`);
}

/**
 * The checks every list passes, however its targets were found (API, CSV): 1 to 16, each of the
 * owner of the own target, of its family, listed once, the own target among them. Null when the
 * own target is the only one.
 */
export function checkedBalance(own: InstanceTarget, resolved: readonly ResolvedTarget[], sourceAffinity: boolean, field: string): ForwardBalanceJson | null {
  countCheck(field, resolved.length);
  const targets: ForwardBalanceJson['targets'] = [];
  for (const [i, { target, weight }] of resolved.entries()) {
    const at = `${field}[${i}]`;
    if (target.ownerId !== own.ownerId) {
      throw new ValidationError(
        `${at}.instanceId`,
        target.instanceId,
        `is instance "${target.instanceName}" of another owner than instance "${own.instanceName}"`,
      );
    }
    if (target.family !== own.family) {
      throw new ValidationError(`${at}.targetAddress`, target.address, `is IPv${target.family} but the forward's target ${own.address} is IPv${own.family}`);
    }
    if (targets.some((t) => t.addressId === target.id)) throw new ValidationError(`${at}.targetAddress`, target.address, 'is listed twice');
    targets.push({ instanceId: target.instanceId, addressId: target.id, address: target.address, weight });
  }
  if (!targets.some((t) => t.addressId === own.id)) {
    throw new ValidationError(
      field,
      targets.map((t) => t.address).join(', '),
      `must include the forward's own target ${own.address} (instance "${own.instanceName}")`,
    );
  }
  if (targets.length === 1) {
    if (sourceAffinity) throw new ValidationError(field, targets[0]!.address, 'lists one target; source affinity needs two or more');
    return null;
  }
  return { sourceAffinity, targets };
}

/** A CSV `targets` cell: addresses with an optional weight (`10.0.0.5*2`) and the word `affinity`, separated by spaces or semicolons. */
export function parseTargetsCell(text: string): { entries: { address: string; weight: number | null }[]; sourceAffinity: boolean } | null | { error: string } {
  if (text === '') return null;
  let sourceAffinity = false;
  const entries: { address: string; weight: number | null }[] = [];
  for (const part of text.split(/[\s;]+/).filter(Boolean)) {
    if (part.toLowerCase() === 'affinity') {
      sourceAffinity = true;
      continue;
    }
    const [address, weight, extra] = part.split('*');
    if (!address || extra !== undefined || (weight !== undefined && !/^\d+$/.test(weight)))
      return { error: `"${part}" is not ADDRESS, ADDRESS*WEIGHT or affinity` };
    entries.push({ address, weight: weight === undefined ? null : Number(weight) });
  }
  return { entries, sourceAffinity };
}

/** Whether two stored balances are the same (jsonb does not keep the keys' order, so not by their text). */
export function sameBalance(a: ForwardBalanceJson | null, b: ForwardBalanceJson | null): boolean {
  if (!a || !b) return a === b;
  return (
    a.sourceAffinity === b.sourceAffinity &&
    a.targets.length === b.targets.length &&
    a.targets.every((t, i) => t.addressId === b.targets[i]!.addressId && t.weight === b.targets[i]!.weight)
  );
}

/** The CSV `targets` cell of a forward (empty for one target). */
export function targetsCell(balance: ForwardBalanceJson | null): string {
  if (!balance) return '';
  return [...balance.targets.map((t) => `${t.address}*${t.weight}`), ...(balance.sourceAffinity ? ['affinity'] : [])].join(' ');
}

/**
 * What of a stored balance goes into the desired state: the targets whose address an instance of
 * the host still holds and whose instance is not stopped (`stopped`: instance ids the agent last
 * discovered not running), and the forward's target address (its own, else the first one left).
 * Fewer than two left: no balance. None left (every instance stopped): all of them, unchanged.
 */
export function desiredBalance(
  stored: ForwardBalanceJson | null,
  ownAddress: string,
  heldAddressIds: ReadonlySet<string>,
  stopped: ReadonlySet<string>,
): { targetAddress: string; balance?: DesiredBalance } {
  if (!stored) return { targetAddress: ownAddress };
  const held = stored.targets.filter((t) => heldAddressIds.has(t.addressId));
  const running = held.filter((t) => !stopped.has(t.instanceId));
  const left = running.length > 0 ? running : held;
  if (left.length === 0) return { targetAddress: ownAddress };
  const targetAddress = left.some((t) => t.address === ownAddress) ? ownAddress : left[0]!.address;
  if (left.length === 1) return { targetAddress };
  return {
    targetAddress,
    balance: { sourceAffinity: stored.sourceAffinity, targets: left.map((t) => ({ instanceId: t.instanceId, address: t.address, weight: t.weight })) },
  };
}
