/**
 * Bandwidth shaping with tc on an instance's host-side interface. Directions are the instance's:
 * ingress (traffic into the instance) leaves the host through the interface, so an htb root qdisc
 * on it shapes it; egress (traffic from the instance) arrives on the interface, so a u32 filter on
 * its ingress hook redirects it to an ifb device of ours, whose htb root qdisc shapes it.
 *
 * Everything Gatehouse creates carries a fixed tag, and reading back and removal look only at
 * tagged objects (see SHAPING_TAGS): htb major 6768: (ASCII "gh") on the interface, htb major
 * 6769: on the ifb, filter preference 26472 (0x6768) on the ingress hook, and the ifb device
 * `ifbName(iface)` = "ghifb" + 10 hex digits of sha256(iface), which must be of kind ifb.
 * The ingress qdisc itself has no handle to tag (it is always ffff:): it is created when missing
 * (an existing ingress or clsact qdisc is shared) and deleted only when removing our filter left it
 * empty.
 *
 * Reading: qdiscs, filters and links come from `tc -j` / `ip -j`; iproute2 6.1 prints classes as
 * text even with -j, so class lines are parsed from text (or from JSON when a newer tc prints it).
 */
import { createHash } from 'node:crypto';
import { CommandError, ConflictError, DriverConfigError, DriverInternalError, TransientError, run, type ExecTarget } from '@gatehouse/sdk';

/** Rates and bursts of one interface, from the instance's point of view; rates in bits/s, bursts in bytes, null = unlimited / default burst. */
export interface ShapingSpec {
  ingressBps: number | null;
  egressBps: number | null;
  ingressBurstBytes: number | null;
  egressBurstBytes: number | null;
}

/** Byte, packet and drop counters of one of our htb classes. */
export interface ShapingCounters {
  bytes: number;
  packets: number;
  drops: number;
}

/** Counters per direction; null where that direction is not shaped by us. */
export interface ShapingStats {
  ingress: ShapingCounters | null;
  egress: ShapingCounters | null;
}

/** The tags that mark tc objects as Gatehouse's; nothing without them is read or removed. */
export const SHAPING_TAGS = {
  /** htb root qdisc on the host-side interface (shapes traffic into the instance); class `6768:1`. */
  ingressMajor: '6768',
  /** htb root qdisc on the ifb device (shapes traffic from the instance); class `6769:1`. */
  egressMajor: '6769',
  /** Preference of the redirect filter on the interface's ingress hook. */
  filterPref: 26472,
  /** Name prefix of our ifb devices. */
  ifbPrefix: 'ghifb',
} as const;

/** Highest accepted rate: 100 Gbit/s. */
export const MAX_SHAPING_BPS = 100_000_000_000;
/** Lowest accepted rate: 8 kbit/s (tc keeps whole bytes per second, and the default burst must fit tc's buffer time). */
export const MIN_SHAPING_BPS = 8_000;
/** Smallest accepted burst: one full Ethernet frame. */
export const MIN_BURST_BYTES = 1_514;
/** Largest accepted burst, also at most MAX_BURST_SECONDS of traffic at the rate (tc stores it as a 32-bit count of 64 ns ticks). */
export const MAX_BURST_BYTES = 4_294_967_295;
/** Longest accepted burst in time at the rate. */
export const MAX_BURST_SECONDS = 60;

/**
 * Input that cannot be applied: the SDK's configuration error (code DRIVER_CONFIG_INVALID), with
 * `path` naming the field (e.g. `spec.ingressBps`) and the value in the message. Nothing was changed on the host.
 */
export class ShapingConfigError extends DriverConfigError {
  constructor(path: string, value: unknown, reason: string) {
    super(path, value, reason);
    this.name = 'ShapingConfigError';
    // the SDK shows values as JSON, where NaN and Infinity read as null
    if (typeof value === 'number' && !Number.isFinite(value)) this.message = `${path} ${reason} (got ${value})`;
  }
}

/** The ifb device that carries an interface's egress shaping: deterministic, 15 characters, in the interface's namespace. */
export function ifbName(iface: string): string {
  return SHAPING_TAGS.ifbPrefix + createHash('sha256').update(iface).digest('hex').slice(0, 10);
}

/** The burst used when a spec leaves it null: 10 ms at the rate, at least 15,000 bytes (ten full frames). */
export function defaultBurstBytes(bps: number): number {
  return Math.max(15_000, Math.ceil(bps / 800));
}

/**
 * Whether an observed spec (from readShaping) carries out a desired one, within tc's own rounding:
 * rates are kept in whole bytes/s and printed truncated to 4 significant digits at least, bursts are
 * kept as 64 ns ticks and printed rounded to Kb/Mb near multiples of 1024. Null bursts mean the default.
 */
export function shapingMatches(desired: ShapingSpec | null, observed: ShapingSpec | null): boolean {
  const want = resolve(desired);
  const got = resolve(observed);
  const same = (a: Limit | null, b: Limit | null) => (a === null || b === null ? a === b : limitMatches(a, b.bps, b.bps, b.burstBytes, b.burstBytes));
  return same(want.ingress, got.ingress) && same(want.egress, got.egress);
}

/**
 * Makes the interface's shaping equal to `spec`: idempotent (an equal spec issues no modifying
 * command and returns changed: false), a changed rate is one `tc class change`, and a null spec or
 * one without rates removes ours. Validates first (ShapingConfigError, nothing changed); throws
 * TransientError when the interface is missing, ConflictError when a device that is not an ifb has
 * our ifb's name, and on a tc failure half-way undoes what this call did and throws DriverInternalError.
 */
export async function applyShaping(input: { iface: string; spec: ShapingSpec | null }, target: ExecTarget = {}): Promise<{ changed: boolean }> {
  const iface = validateIface(input.iface);
  const want = validateSpec(input.spec);
  if (want.ingress === null && want.egress === null) return { changed: await removeOurs(iface, target) };
  const seen = await observe(iface, target);
  // the interface appears when its instance starts: trying again later can succeed
  if (!seen.ifaceExists) throw new TransientError(`Failed applying shaping on ${iface}: no such interface`);
  if (want.egress && seen.ifb !== null && seen.ifb.kind !== 'ifb') {
    throw new ConflictError(`Failed applying shaping on ${iface}: device ${ifbName(iface)} exists and is not an ifb device`);
  }
  const host = new HostChanges(iface, target);
  try {
    await applyIngress(host, iface, want.ingress, seen);
    await applyEgress(host, iface, want.egress, seen);
  } catch (err) {
    await host.rollback();
    throw err instanceof CommandError ? new DriverInternalError(`Failed applying shaping on ${iface}: ${err.stderr.trim()}`, { cause: err }) : err;
  }
  return { changed: host.count > 0 };
}

/** The shaping of ours really in place on the interface (a direction counts only when its whole path is there), or null. */
export async function readShaping(iface: string, target: ExecTarget = {}): Promise<ShapingSpec | null> {
  const seen = await observe(validateIface(iface), target);
  const ingress = seen.rootOurs ? seen.ingressClass : null;
  const egress = egressInPlace(seen) ? seen.egressClass : null;
  if (ingress === null && egress === null) return null;
  return {
    ingressBps: ingress?.rateBps ?? null,
    egressBps: egress?.rateBps ?? null,
    ingressBurstBytes: ingress?.burstBytes ?? null,
    egressBurstBytes: egress?.burstBytes ?? null,
  };
}

/** tc class statistics of our shaping classes (bytes and packets sent through them, drops). */
export async function shapingStats(iface: string, target: ExecTarget = {}): Promise<ShapingStats> {
  const seen = await observe(validateIface(iface), target);
  return {
    ingress: seen.rootOurs ? (seen.ingressClass?.counters ?? null) : null,
    egress: egressInPlace(seen) ? (seen.egressClass?.counters ?? null) : null,
  };
}

/** Removes our shaping of the interface and its ifb device; idempotent, succeeds when nothing is there or the interface is gone. */
export async function removeShaping(iface: string, target: ExecTarget = {}): Promise<void> {
  await removeOurs(validateIface(iface), target);
}

// --- validation -------------------------------------------------------------------------------

interface Limit {
  bps: number;
  burstBytes: number;
}

interface Resolved {
  ingress: Limit | null;
  egress: Limit | null;
}

function validateIface(iface: unknown): string {
  if (typeof iface !== 'string' || !/^[^\s/:]{1,15}$/.test(iface) || iface === '.' || iface === '..') {
    throw new ShapingConfigError('iface', iface, 'must be an interface name (1 to 15 characters, no whitespace, "/" or ":")');
  }
  return iface;
}

function validateSpec(spec: ShapingSpec | null): Resolved {
  if (spec === null) return { ingress: null, egress: null };
  if (typeof spec !== 'object') throw new ShapingConfigError('spec', spec, 'must be an object or null');
  return { ingress: validateLimit(spec, 'ingress'), egress: validateLimit(spec, 'egress') };
}

function validateLimit(spec: ShapingSpec, direction: 'ingress' | 'egress'): Limit | null {
  const rateKey = `${direction}Bps` as const;
  const burstKey = `${direction}BurstBytes` as const;
  const bps: unknown = spec[rateKey];
  const burst: unknown = spec[burstKey];
  if (bps === null || bps === undefined) {
    if (burst !== null && burst !== undefined) throw new ShapingConfigError(`spec.${burstKey}`, burst, `must be null when spec.${rateKey} is null`);
    return null;
  }
  if (typeof bps !== 'number' || !Number.isSafeInteger(bps) || bps <= 0)
    throw new ShapingConfigError(`spec.${rateKey}`, bps, 'must be a positive integer (bits per second)');
  if (bps < MIN_SHAPING_BPS || bps > MAX_SHAPING_BPS) {
    throw new ShapingConfigError(`spec.${rateKey}`, bps, `must be between ${MIN_SHAPING_BPS} and ${MAX_SHAPING_BPS} bits per second`);
  }
  if (burst === null || burst === undefined) return { bps, burstBytes: defaultBurstBytes(bps) };
  if (typeof burst !== 'number' || !Number.isSafeInteger(burst)) throw new ShapingConfigError(`spec.${burstKey}`, burst, 'must be an integer number of bytes');
  const max = Math.min(MAX_BURST_BYTES, Math.floor((bps / 8) * MAX_BURST_SECONDS));
  if (burst < MIN_BURST_BYTES || burst > max) {
    throw new ShapingConfigError(`spec.${burstKey}`, burst, `must be between ${MIN_BURST_BYTES} and ${max} bytes at ${bps} bits per second`);
  }
  return { bps, burstBytes: burst };
}

/** A spec with default bursts filled in; used only on trusted (observed or validated) values. */
function resolve(spec: ShapingSpec | null): Resolved {
  const limit = (bps: number | null, burst: number | null): Limit | null => (bps === null ? null : { bps, burstBytes: burst ?? defaultBurstBytes(bps) });
  return { ingress: limit(spec?.ingressBps ?? null, spec?.ingressBurstBytes ?? null), egress: limit(spec?.egressBps ?? null, spec?.egressBurstBytes ?? null) };
}

function limitMatches(want: Limit, rateBps: number, ceilBps: number, burstBytes: number, cburstBytes: number): boolean {
  // rates: whole bytes/s (up to 8 bits off), printed truncated with a mantissa of at least 1000 (under 0.1% off)
  const rateOk = (got: number) => Math.abs(want.bps - got) <= want.bps / 1000 + 8;
  // bursts: one 64 ns tick each way at the rate, plus the Kb/Mb display rounding
  const tick = Math.ceil((want.bps / 8) * 128e-9) + 2;
  const burstOk = (got: number) => Math.abs(want.burstBytes - got) <= tick + (got >= 1 << 20 ? 1024 : got >= 1024 ? 16 : 0);
  return rateOk(rateBps) && rateOk(ceilBps) && burstOk(burstBytes) && burstOk(cburstBytes);
}

// --- observation ------------------------------------------------------------------------------

interface HtbClass {
  rateBps: number;
  ceilBps: number;
  burstBytes: number;
  cburstBytes: number;
  counters: ShapingCounters;
}

interface Observed {
  ifaceExists: boolean;
  /** The interface's root qdisc is our htb. */
  rootOurs: boolean;
  ingressClass: HtbClass | null;
  /** Kind of the qdisc holding the interface's ingress hook, if any. */
  hook: 'ingress' | 'clsact' | null;
  /** Our redirect filter at SHAPING_TAGS.filterPref: present and pointing at our ifb, present but different, or absent. */
  filter: 'ours' | 'other' | null;
  ifb: { kind: string | null; up: boolean } | null;
  ifbRootOurs: boolean;
  egressClass: HtbClass | null;
}

interface TcQdisc {
  kind?: string;
  handle?: string;
  root?: boolean;
  parent?: string;
  options?: { default?: string };
}

interface TcFilter {
  pref?: number;
  options?: { actions?: { kind?: string; mirred_action?: string; direction?: string; to_dev?: string }[] };
}

function egressInPlace(seen: Observed): boolean {
  return seen.filter === 'ours' && seen.ifb?.kind === 'ifb' && seen.ifb.up && seen.ifbRootOurs;
}

function isOurRoot(qdiscs: TcQdisc[], major: string): boolean {
  return qdiscs.some((q) => q.root === true && q.kind === 'htb' && q.handle === `${major}:` && q.options?.default === '0x1');
}

function isMissingDevice(err: unknown): boolean {
  return err instanceof CommandError && /Cannot find device|does not exist/.test(err.stderr);
}

async function tcJson<T>(args: string[], target: ExecTarget): Promise<T[]> {
  const out = (await run('tc', ['-j', ...args], target)).trim();
  return out === '' ? [] : (JSON.parse(out) as T[]);
}

async function observe(iface: string, target: ExecTarget): Promise<Observed> {
  const ifb = ifbName(iface);
  const seen: Observed = { ifaceExists: true, rootOurs: false, ingressClass: null, hook: null, filter: null, ifb: null, ifbRootOurs: false, egressClass: null };
  try {
    const qdiscs = await tcJson<TcQdisc>(['qdisc', 'show', 'dev', iface], target);
    seen.rootOurs = isOurRoot(qdiscs, SHAPING_TAGS.ingressMajor);
    if (seen.rootOurs) seen.ingressClass = await readClass(iface, `${SHAPING_TAGS.ingressMajor}:1`, target);
    const hook = qdiscs.find((q) => q.parent === 'ffff:fff1' && (q.kind === 'ingress' || q.kind === 'clsact'));
    seen.hook = hook ? (hook.kind as 'ingress' | 'clsact') : null;
    if (seen.hook) {
      const filters = (await tcJson<TcFilter>(['filter', 'show', 'dev', iface, 'ingress'], target)).filter((f) => f.pref === SHAPING_TAGS.filterPref);
      const redirectsToIfb = (f: TcFilter) =>
        (f.options?.actions ?? []).some((a) => a.kind === 'mirred' && a.mirred_action === 'redirect' && a.direction === 'egress' && a.to_dev === ifb);
      seen.filter = filters.length === 0 ? null : filters.some(redirectsToIfb) ? 'ours' : 'other';
    }
  } catch (err) {
    if (!isMissingDevice(err)) throw err;
    seen.ifaceExists = false;
  }
  seen.ifb = await readLink(ifb, target);
  if (seen.ifb?.kind === 'ifb') {
    seen.ifbRootOurs = isOurRoot(await tcJson<TcQdisc>(['qdisc', 'show', 'dev', ifb], target), SHAPING_TAGS.egressMajor);
    if (seen.ifbRootOurs) seen.egressClass = await readClass(ifb, `${SHAPING_TAGS.egressMajor}:1`, target);
  }
  return seen;
}

async function readLink(name: string, target: ExecTarget): Promise<{ kind: string | null; up: boolean } | null> {
  try {
    const [link] = JSON.parse(await run('ip', ['-j', '-d', 'link', 'show', 'dev', name], target)) as { flags?: string[]; linkinfo?: { info_kind?: string } }[];
    return link ? { kind: link.linkinfo?.info_kind ?? null, up: link.flags?.includes('UP') ?? false } : null;
  } catch (err) {
    if (isMissingDevice(err)) return null;
    throw err;
  }
}

async function readClass(dev: string, classid: string, target: ExecTarget): Promise<HtbClass | null> {
  return parseHtbClasses(await run('tc', ['-j', '-s', 'class', 'show', 'dev', dev], target)).get(classid) ?? null;
}

/** htb classes by class id, from `tc -j -s class show` output: JSON where tc prints it, else (iproute2 6.1) text. */
function parseHtbClasses(out: string): Map<string, HtbClass> {
  const classes = new Map<string, HtbClass>();
  const trimmed = out.trim();
  if (trimmed.startsWith('[')) {
    // newer iproute2: rates in bytes/s, sizes in bytes, counters beside or under "stats"
    type JsonClass = { class?: string; handle?: string; options?: Record<string, number>; stats?: Record<string, number> } & Record<string, unknown>;
    for (const c of JSON.parse(trimmed) as JsonClass[]) {
      const o = c.options;
      if (c.class !== 'htb' || !c.handle || !o || o.rate === undefined || o.ceil === undefined || o.burst === undefined || o.cburst === undefined) continue;
      const stat = (key: string) => Number(c.stats?.[key] ?? c[key] ?? 0);
      classes.set(c.handle, {
        rateBps: o.rate * 8,
        ceilBps: o.ceil * 8,
        burstBytes: o.burst,
        cburstBytes: o.cburst,
        counters: { bytes: stat('bytes'), packets: stat('packets'), drops: stat('drops') },
      });
    }
    return classes;
  }
  for (const block of trimmed.split(/\n(?=class )/)) {
    const [header = '', ...rest] = block.split('\n');
    const words = header.trim().split(/\s+/);
    if (words[0] !== 'class' || words[1] !== 'htb' || !words[2]) continue;
    const after = (key: string) => {
      const i = words.indexOf(key);
      const value = i < 0 ? undefined : words[i + 1];
      if (value === undefined) throw new Error(`Cannot read tc class output (no ${key}): ${header}`);
      return value.replace(/\/\d+$/, '');
    };
    const sent = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/.exec(rest.join('\n'));
    classes.set(words[2], {
      rateBps: parseRate(after('rate')),
      ceilBps: parseRate(after('ceil')),
      burstBytes: parseSize(after('burst')),
      cburstBytes: parseSize(after('cburst')),
      counters: { bytes: Number(sent?.[1] ?? 0), packets: Number(sent?.[2] ?? 0), drops: Number(sent?.[3] ?? 0) },
    });
  }
  return classes;
}

function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(bit|Kbit|Mbit|Gbit|Tbit)$/.exec(text);
  if (!m) throw new Error(`Cannot read tc rate ${JSON.stringify(text)}`);
  const unit = { bit: 1, Kbit: 1e3, Mbit: 1e6, Gbit: 1e9, Tbit: 1e12 }[m[2] as 'bit'];
  return Math.round(Number(m[1]) * unit);
}

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(b|Kb|Mb|Gb)$/.exec(text);
  if (!m) throw new Error(`Cannot read tc size ${JSON.stringify(text)}`);
  const unit = { b: 1, Kb: 1024, Mb: 1024 ** 2, Gb: 1024 ** 3 }[m[2] as 'b'];
  return Math.round(Number(m[1]) * unit);
}

// --- changes ----------------------------------------------------------------------------------

/** Modifying commands of one apply, counted, with the undo of each registered as it succeeds. */
class HostChanges {
  count = 0;
  private readonly undos: [string, string[]][] = [];

  constructor(
    readonly iface: string,
    readonly target: ExecTarget,
  ) {}

  async run(command: string, args: string[], undo?: [string, string[]]): Promise<void> {
    await run(command, args, this.target);
    this.count++;
    if (undo) this.undos.push(undo);
  }

  /** Best effort: each undo is tried even when an earlier one fails. */
  async rollback(): Promise<void> {
    for (const [command, args] of this.undos.splice(0).reverse()) await run(command, args, this.target).catch(() => undefined);
  }
}

function htbClassArgs(verb: 'add' | 'change', dev: string, major: string, limit: Limit): string[] {
  const rate = `${limit.bps}bit`;
  const burst = `${limit.burstBytes}b`;
  // an explicit quantum keeps the kernel's default (rate/10 bytes) without its "quantum is big/small" warnings
  const quantum = String(Math.min(200_000, Math.max(MIN_BURST_BYTES, Math.floor(limit.bps / 80))));
  const ids = ['parent', `${major}:`, 'classid', `${major}:1`];
  return ['class', verb, 'dev', dev, ...ids, 'htb', 'rate', rate, 'ceil', rate, 'burst', burst, 'cburst', burst, 'quantum', quantum];
}

/** Our htb root qdisc and its one class on `dev`, created, changed or left alone. */
async function ensureHtb(host: HostChanges, dev: string, major: string, want: Limit, rootOurs: boolean, current: HtbClass | null): Promise<void> {
  if (!rootOurs) {
    // replaces whatever root qdisc was there (the spec asks for shaping); the undo returns the device to its default qdisc
    await host.run(
      'tc',
      ['qdisc', 'replace', 'dev', dev, 'root', 'handle', `${major}:`, 'htb', 'default', '1'],
      ['tc', ['qdisc', 'del', 'dev', dev, 'root', 'handle', `${major}:`]],
    );
    await host.run('tc', htbClassArgs('add', dev, major, want));
  } else if (current === null) {
    await host.run('tc', htbClassArgs('add', dev, major, want), ['tc', ['class', 'del', 'dev', dev, 'classid', `${major}:1`]]);
  } else if (!limitMatches(want, current.rateBps, current.ceilBps, current.burstBytes, current.cburstBytes)) {
    const before = { bps: current.rateBps, burstBytes: current.burstBytes };
    await host.run('tc', htbClassArgs('change', dev, major, want), ['tc', htbClassArgs('change', dev, major, before)]);
  }
}

async function applyIngress(host: HostChanges, iface: string, want: Limit | null, seen: Observed): Promise<void> {
  const major = SHAPING_TAGS.ingressMajor;
  if (want) await ensureHtb(host, iface, major, want, seen.rootOurs, seen.ingressClass);
  else if (seen.rootOurs) await host.run('tc', ['qdisc', 'del', 'dev', iface, 'root', 'handle', `${major}:`]);
}

async function applyEgress(host: HostChanges, iface: string, want: Limit | null, seen: Observed): Promise<void> {
  if (want === null) {
    await removeEgress(host, iface, seen);
    return;
  }
  const ifb = ifbName(iface); // checked by applyShaping: absent or an ifb device
  if (seen.ifb === null) await host.run('ip', ['link', 'add', ifb, 'txqueuelen', '1000', 'type', 'ifb'], ['ip', ['link', 'del', ifb]]);
  if (!seen.ifb?.up) await host.run('ip', ['link', 'set', ifb, 'up']);
  await ensureHtb(host, ifb, SHAPING_TAGS.egressMajor, want, seen.ifbRootOurs, seen.egressClass);
  if (seen.hook === null) await host.run('tc', ['qdisc', 'add', 'dev', iface, 'handle', 'ffff:', 'ingress'], ['tc', ['qdisc', 'del', 'dev', iface, 'ingress']]);
  if (seen.filter === 'ours') return;
  const pref = String(SHAPING_TAGS.filterPref);
  if (seen.filter === 'other') await host.run('tc', ['filter', 'del', 'dev', iface, 'ingress', 'pref', pref]);
  // u32 matching every packet rather than matchall: u32 is the classifier every kernel has (this one lacks matchall)
  await host.run(
    'tc',
    [
      'filter',
      'add',
      'dev',
      iface,
      'ingress',
      'pref',
      pref,
      'protocol',
      'all',
      'u32',
      'match',
      'u32',
      '0',
      '0',
      'action',
      'mirred',
      'egress',
      'redirect',
      'dev',
      ifb,
    ],
    ['tc', ['filter', 'del', 'dev', iface, 'ingress', 'pref', pref]],
  );
}

/** Our redirect filter, the ingress qdisc when that filter was all it held, and our ifb device. */
async function removeEgress(host: HostChanges, iface: string, seen: Observed): Promise<void> {
  if (seen.filter === 'ours') {
    await host.run('tc', ['filter', 'del', 'dev', iface, 'ingress', 'pref', String(SHAPING_TAGS.filterPref)]);
    if (seen.hook === 'ingress' && (await tcJson<TcFilter>(['filter', 'show', 'dev', iface, 'ingress'], host.target)).length === 0) {
      await host.run('tc', ['qdisc', 'del', 'dev', iface, 'ingress']);
    }
  }
  if (seen.ifb?.kind === 'ifb') await host.run('ip', ['link', 'del', ifbName(iface)]);
}

async function removeOurs(iface: string, target: ExecTarget): Promise<boolean> {
  const seen = await observe(iface, target);
  const host = new HostChanges(iface, target);
  try {
    if (seen.ifaceExists) await applyIngress(host, iface, null, seen);
    await removeEgress(host, iface, seen);
  } catch (err) {
    // the interface may disappear while we remove (an instance being deleted): then only the ifb is left to remove
    if (!isMissingDevice(err)) {
      throw err instanceof CommandError ? new DriverInternalError(`Failed removing shaping on ${iface}: ${err.stderr.trim()}`, { cause: err }) : err;
    }
    if ((await readLink(ifbName(iface), target))?.kind === 'ifb') await host.run('ip', ['link', 'del', ifbName(iface)]);
  }
  return host.count > 0;
}
