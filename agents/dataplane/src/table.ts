/**
 * The `inet gatehouse` table as data: the rendered commands (or what `nft -j list table` returns)
 * split into definitions (chains, maps, sets, counters), rule lists per chain and elements per map
 * or set, so two versions can be compared object by object and turned into the few commands that
 * take one to the other.
 */
import type { NftCommand } from './nft.js';
import { IP_PROTOCOL, RATE_LIMIT_SET, TABLE } from './render.js';

/** A table's content, comparable across render and listing. */
export interface TableContent {
  /** `chain:NAME`, `map:NAME`, `set:NAME`, `counter:NAME` → the definition, normalised. */
  defs: Map<string, string>;
  /** Chain → its rules' expressions, normalised, in order. */
  rules: Map<string, string[]>;
  /** Map or set → key (normalised) → [key, data]: a map element's data, a set element's comment (null without). */
  elements: Map<string, Map<string, [unknown, unknown]>>;
}

const DEF_KINDS = ['chain', 'map', 'set', 'counter'] as const;
type DefKind = (typeof DEF_KINDS)[number];
// what identifies a definition; the rest (handle, counters' values, elements) is not part of it
const DEF_FIELDS: Record<DefKind, string[]> = {
  chain: ['name', 'type', 'hook', 'prio', 'policy'],
  map: ['name', 'type', 'map', 'flags'],
  set: ['name', 'type', 'flags', 'stmt'],
  counter: ['name'],
};

function pick(o: Record<string, unknown>, fields: string[]): string {
  return JSON.stringify(fields.filter((f) => o[f] !== undefined).map((f) => [f, o[f]]));
}

function emptyContent(): TableContent {
  return { defs: new Map(), rules: new Map(), elements: new Map() };
}

// elements as nft takes and lists them: `[key, data]` in a map; in a set the bare key, or
// `{ elem: { val: key, comment, counter } }` when it carries more (the counter's value is not part of it)
function elementOf(e: unknown): [unknown, unknown] {
  if (Array.isArray(e)) return e as [unknown, unknown];
  const elem = (e as { elem?: { val: unknown; comment?: string } } | null)?.elem;
  return elem ? [elem.val, elem.comment ?? null] : [e, null];
}

/** An element as nft takes it in an `add element` command, for a map or a set (see `elementOf`). */
function nftElement(isSet: boolean, key: unknown, data: unknown): unknown {
  if (!isSet) return [key, data];
  return data === null ? key : { elem: { val: key, comment: data } };
}

/**
 * A key as Gatehouse renders it: nft lists the protocol of a forward key by name (`"tcp"`), the
 * renderer writes its number (see `IP_PROTOCOL`); both spell the same element.
 */
function canonicalKey(key: unknown): unknown {
  const concat = (key as { concat?: unknown[] } | null)?.concat;
  if (!Array.isArray(concat) || !concat.some((part) => part === 'tcp' || part === 'udp')) return key;
  return { concat: concat.map((part) => (part === 'tcp' || part === 'udp' ? IP_PROTOCOL[part] : part)) };
}

function addElements(content: TableContent, map: string, elem: unknown[]): void {
  let m = content.elements.get(map);
  if (!m) content.elements.set(map, (m = new Map()));
  for (const e of elem) {
    const [listed, data] = elementOf(e);
    const key = canonicalKey(listed);
    m.set(JSON.stringify(key), [key, data]);
  }
}

/** Splits rendered `add` commands into a table content. */
export function contentOfCommands(commands: readonly NftCommand[]): TableContent {
  const content = emptyContent();
  for (const command of commands) {
    const add = command.add as Record<string, Record<string, unknown>> | undefined;
    if (!add) throw new Error(`only add commands can be split, got ${JSON.stringify(command).slice(0, 100)}`);
    const [kind, body] = Object.entries(add)[0]!;
    if (kind === 'rule') {
      const chain = body.chain as string;
      content.rules.set(chain, [...(content.rules.get(chain) ?? []), JSON.stringify(body.expr)]);
    } else if (kind === 'element') {
      addElements(content, body.name as string, body.elem as unknown[]);
    } else if ((DEF_KINDS as readonly string[]).includes(kind)) {
      content.defs.set(`${kind}:${body.name as string}`, pick(body, DEF_FIELDS[kind as DefKind]));
      if (kind === 'chain' && !content.rules.has(body.name as string)) content.rules.set(body.name as string, []);
      if ((kind === 'map' || kind === 'set') && !content.elements.has(body.name as string)) content.elements.set(body.name as string, new Map());
    }
  }
  return content;
}

// a rule's anonymous counter is listed with its values, rendered without: compare them without
const withoutCounterValues = (key: string, value: unknown) =>
  key === 'counter' && value !== null && typeof value === 'object' && 'packets' in value ? null : value;

/** Splits what `nft -j list table` returned (see `listTable`). Rules keep nft's own spelling, anonymous counters lose their values. */
export function contentOfListing(listing: readonly Record<string, unknown>[]): TableContent {
  const content = emptyContent();
  for (const object of listing) {
    const [kind, body] = Object.entries(object)[0] as [string, Record<string, unknown>];
    if (kind === 'rule') {
      const chain = body.chain as string;
      content.rules.set(chain, [...(content.rules.get(chain) ?? []), JSON.stringify(body.expr, withoutCounterValues)]);
    } else if ((DEF_KINDS as readonly string[]).includes(kind)) {
      content.defs.set(`${kind}:${body.name as string}`, pick(body, DEF_FIELDS[kind as DefKind]));
      if (kind === 'chain' && !content.rules.has(body.name as string)) content.rules.set(body.name as string, []);
      // the per-source rate limit buckets are the packet path's state, not Gatehouse's content
      const runtime = (Object.values(RATE_LIMIT_SET) as string[]).includes(body.name as string);
      if (kind === 'map' || kind === 'set') addElements(content, body.name as string, runtime ? [] : ((body.elem as unknown[] | undefined) ?? []));
    }
  }
  return content;
}

function sameElements(a: Map<string, [unknown, unknown]> | undefined, b: Map<string, [unknown, unknown]> | undefined): boolean {
  if ((a?.size ?? 0) !== (b?.size ?? 0)) return false;
  for (const [key, [, data]] of a ?? []) {
    const other = b?.get(key);
    if (!other || JSON.stringify(other[1]) !== JSON.stringify(data)) return false;
  }
  return true;
}

/**
 * Where `actual` (a listing) differs from `expected`, in words. `expectedRules` are the rule lists
 * nft printed right after Gatehouse last wrote each chain (nft respells rules, so rendered and
 * listed rules cannot be compared directly); elements and definitions compare as they are.
 */
export function driftBetween(expected: TableContent, expectedRules: Map<string, string[]>, actual: TableContent, options: { elements: boolean }): string[] {
  const out: string[] = [];
  for (const key of expected.defs.keys()) if (!actual.defs.has(key)) out.push(`${key.replace(':', ' ')} is missing`);
  for (const key of actual.defs.keys()) if (!expected.defs.has(key)) out.push(`${key.replace(':', ' ')} is not Gatehouse's`);
  for (const [chain, rules] of expectedRules) {
    const now = actual.rules.get(chain);
    if (now && JSON.stringify(now) !== JSON.stringify(rules)) out.push(`chain ${chain} has ${now.length} rules differing from the ${rules.length} applied`);
  }
  if (options.elements) {
    for (const [map, elements] of expected.elements) {
      const kind = expected.defs.has(`set:${map}`) ? 'set' : 'map';
      if (actual.defs.has(`${kind}:${map}`) && !sameElements(elements, actual.elements.get(map))) out.push(`${kind} ${map} elements differ`);
    }
  }
  return out;
}

/**
 * The commands that take a table from `from` to `to` object by object: new definitions, chains
 * whose rules changed (flushed and refilled), element deletions and additions, then removed
 * chains and counters. Undefined when a definition changed in place (a table replace is needed).
 */
export function incrementalCommands(from: TableContent, to: TableContent): NftCommand[] | undefined {
  for (const [key, def] of to.defs) {
    const old = from.defs.get(key);
    if (old !== undefined && old !== def) return undefined;
  }
  const commands: NftCommand[] = [];
  const [adds, removes] = [[...to.defs.keys()].filter((k) => !from.defs.has(k)), [...from.defs.keys()].filter((k) => !to.defs.has(k))];
  // maps and sets appear only with a table replace; base chains too (their definitions carry the hook)
  if ([...adds, ...removes].some((k) => k.startsWith('map:') || k.startsWith('set:'))) return undefined;
  for (const key of adds) {
    const [kind, name] = key.split(':') as [string, string];
    commands.push({ add: { [kind]: { ...TABLE, ...Object.fromEntries(JSON.parse(to.defs.get(key)!) as [string, unknown][]), name } } });
  }
  for (const [chain, rules] of to.rules) {
    const old = from.rules.get(chain);
    if (old && JSON.stringify(old) === JSON.stringify(rules)) continue;
    if (old && old.length > 0) commands.push({ flush: { chain: { ...TABLE, name: chain } } });
    for (const expr of rules) commands.push({ add: { rule: { ...TABLE, chain, expr: JSON.parse(expr) as unknown } } });
  }
  const deletions: NftCommand[] = [];
  const additions: NftCommand[] = [];
  for (const map of new Set([...from.elements.keys(), ...to.elements.keys()])) {
    const before = from.elements.get(map) ?? new Map<string, [unknown, unknown]>();
    const after = to.elements.get(map) ?? new Map<string, [unknown, unknown]>();
    const isSet = to.defs.has(`set:${map}`);
    const gone: unknown[] = [];
    const added: unknown[] = [];
    for (const [key, [k, data]] of before) {
      const next = after.get(key);
      if (!next || JSON.stringify(next[1]) !== JSON.stringify(data)) gone.push(k);
    }
    for (const [key, [k, data]] of after) {
      const prev = before.get(key);
      if (!prev || JSON.stringify(prev[1]) !== JSON.stringify(data)) added.push(nftElement(isSet, k, data));
    }
    if (gone.length > 0) deletions.push({ delete: { element: { ...TABLE, name: map, elem: gone } } });
    if (added.length > 0) additions.push({ add: { element: { ...TABLE, name: map, elem: added } } });
  }
  commands.push(...deletions, ...additions);
  // chains before counters: a removed instance's chain may count into its counter
  for (const key of removes.sort((a, b) => (a.startsWith('chain:') === b.startsWith('chain:') ? 0 : a.startsWith('chain:') ? -1 : 1))) {
    const [kind, name] = key.split(':') as [string, string];
    if (kind === 'chain' && (from.rules.get(name)?.length ?? 0) > 0) commands.push({ flush: { chain: { ...TABLE, name } } });
    commands.push({ delete: { [kind]: { ...TABLE, name } } });
  }
  return commands;
}
