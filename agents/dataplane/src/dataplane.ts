/**
 * One host's nftables dataplane: keeps the `inet gatehouse` table equal to a desired state.
 *
 * The first apply (and any apply after drift or a failed incremental step) replaces the whole
 * table in one atomic transaction. Later applies send only the difference against what was last
 * applied: one element per changed forward port, a flushed and refilled chain per changed
 * firewall, so their cost does not grow with the number of forwards. `drift` compares the live
 * table with what was last applied (a flushed ruleset, a deleted rule, a foreign element) so the
 * agent can repair it.
 */
import { randomInt } from 'node:crypto';
import { run, type Counter, type DesiredState, type ExecTarget, type ObservedFirewall, type ObservedForward } from '@gatehouse/sdk';
import { NftError, deleteTableCommands, listTable, replaceTable, type NftCommand } from './nft.js';
import { NftSession } from './nft-session.js';
import { idFromName, observeListing, scanCounterSet, type ScannedCounterSet } from './observe.js';
import {
  RATE_LIMIT_COUNTER_SET,
  TABLE,
  changedForwards,
  firewallChainName,
  instanceCounterName,
  renderForwardMaps,
  renderRuleset,
  type RenderOptions,
} from './render.js';
import { contentOfCommands, contentOfListing, driftBetween, incrementalCommands, type TableContent } from './table.js';

/** What an apply did. */
export interface DataplaneApplyResult {
  changed: boolean;
  /** `unchanged`: nothing sent; `incremental`: only the differences; `replace`: the whole table in one transaction. */
  mode: 'unchanged' | 'incremental' | 'replace';
  /** nft commands sent. */
  commands: number;
}

/** Counters read from the table. */
export interface DataplaneCounters {
  /** Packets and bytes towards each forward (before DNAT), by forward id. */
  forwards: Map<string, Counter>;
  /** Forwarded traffic to (`in`) and from (`out`) each instance, by instance id. */
  instances: Map<string, { in: Counter; out: Counter }>;
  /**
   * One life of the forward counters: the handles of the table and of its counter sets
   * (`t12.3.4`), which change when the table is replaced and every element's counter starts from zero.
   */
  forwardEpoch: string;
  /**
   * New connections each rate-limited forward's limits refused (dropped or rejected), by forward
   * id, counted from zero when the limit first came (its elements in `fwd4_rlc`/`fwd6_rlc`); same
   * epoch as the forward counters. Empty when no forward applied by this process has a rate limit.
   */
  rateLimited: Map<string, number>;
}

interface Applied {
  state: DesiredState;
  /** The table's frame: its content without the forwards' elements (rendered from `state` when needed). */
  content: TableContent;
  /** Each chain's rules as nft listed them after Gatehouse last wrote the chain. */
  listedRules: Map<string, string[]>;
}

/** What a dataplane keeps besides the desired state. */
export interface DataplaneOptions {
  /** Count each instance's forwarded traffic (`counters().instances`): a lookup per forwarded packet, so only for a reader. Default true. */
  instanceCounters?: boolean;
}

/** The dataplane of one host (or one network namespace, for tests and the sandbox). */
export class Dataplane {
  private applied: Applied | undefined;
  private readonly render: RenderOptions;
  /** Names the life of the table this process last replaced (the `t` part of the forward epoch); unset when it replaced none. */
  private tableLife: string | undefined;
  /** Forward ids by their counter elements' comment, from the last counter read (one regex per new comment only). */
  private ids = new Map<string, string>();
  /** The rules' spelling of the last frame spelled (`spellRules`). */
  private spelled: { key: string; rules: Map<string, string[]> } | undefined;
  /** Every transaction of this dataplane, in order: small ones through one long-lived `nft -j -i`, whole tables through `nft -j -f`. */
  private readonly nft: NftSession;

  constructor(
    readonly target: ExecTarget = {},
    options: DataplaneOptions = {},
  ) {
    this.render = { instanceCounters: options.instanceCounters ?? true };
    this.nft = new NftSession(target);
  }

  /** Ends the dataplane's nft process (none stays behind); later transactions each start their own. Idempotent. */
  async close(): Promise<void> {
    await this.nft.close();
  }

  /** The state last applied, if any. */
  get appliedState(): DesiredState | undefined {
    return this.applied?.state;
  }

  /** Makes the table match `state`. `force` replaces the whole table (after drift, on start). */
  async apply(state: DesiredState, options: { force?: boolean } = {}): Promise<DataplaneApplyResult> {
    if (state.instances.length === 0) {
      // nothing to apply: nothing of ours stays behind, not even an empty table
      // (`list chains` fetches no elements: even a terse listing of the table fetches them all)
      const existed = (await this.chainNames()).length > 0;
      await this.remove();
      return { changed: existed, mode: existed ? 'replace' : 'unchanged', commands: existed ? 2 : 0 };
    }
    // tens of thousands of forward elements are neither rendered nor diffed here unless the table is replaced
    const frame = renderRuleset(state, { ...this.render, forwardElements: false });
    const content = contentOfCommands(frame);
    const previous = this.applied;
    if (previous && !options.force) {
      const commands = incrementalChange(previous, state, content, this.render);
      if (commands?.length === 0) {
        this.applied = { ...previous, state };
        return { changed: false, mode: 'unchanged', commands: 0 };
      }
      if (commands) {
        try {
          await this.nft.apply(commands);
          this.applied = { state, content, listedRules: await this.relist(previous, content) };
          return { changed: true, mode: 'incremental', commands: commands.length };
        } catch (err) {
          // the transaction changed nothing (the table differs from what we last applied): replace it
          if (!(err instanceof NftError)) throw err;
        }
      }
    }
    // nft 1.0.6 fetches every element for any listing of the table (also `list chain`; at 250,000
    // forwards 24 s of CPU, the kernel walking each set from its start for every message): a
    // replace lists nothing of the table, before or after. The rules' spelling that drift compares
    // comes from the frame alone (`spellRules`). A replace always counts as a change: whether the
    // table there already held the wanted elements would take that listing (an agent start over
    // its own table at 250,000 forwards spent most of its 39 s there).
    this.applied = undefined;
    this.tableLife = undefined;
    const commands = replaceTable(TABLE.family, TABLE.table, renderRuleset(state, this.render));
    await this.nft.apply(commands);
    // a number no earlier replace of this process used: every element's counter starts from zero
    this.tableLife = String(randomInt(1, 2 ** 47));
    this.applied = { state, content, listedRules: await this.spellRules(frame) };
    return { changed: true, mode: 'replace', commands: commands.length };
  }

  /**
   * Each chain's rules as nft lists them for a table whose frame (the table without its forward
   * elements) is `frame`. nft respells rules (drift compares listings with listings), and a rule
   * lists the same in any table of the family, whatever elements its sets hold and whether its
   * chain has a hook: so the frame goes into a scratch table (`SPELL_TABLE`) with plain chains
   * (no hook: it sees no packet), is listed there (its few elements only) and deleted, instead
   * of listing the real table with its hundreds of thousands of forward elements. The same frame
   * is spelled once per process.
   */
  private async spellRules(frame: readonly NftCommand[]): Promise<Map<string, string[]>> {
    const key = JSON.stringify(frame);
    if (this.spelled?.key === key) return this.spelled.rules;
    try {
      await this.nft.apply(replaceTable(TABLE.family, SPELL_TABLE, frame.map(scratchCommand)));
      const rules = contentOfListing((await listTable(TABLE.family, SPELL_TABLE, this.target)) ?? []).rules;
      this.spelled = { key, rules };
      return rules;
    } finally {
      await this.nft.apply(deleteTableCommands(TABLE.family, SPELL_TABLE));
    }
  }

  /**
   * How the live table differs from what was last applied, in words; empty when it does not.
   * `elements: false` skips map elements (a terse listing, cheap with tens of thousands of
   * forwards). Undefined when nothing was applied yet by this process. `signal` stops the check
   * (nft 1.0.6 fetches every element for any listing of the table, seconds of the kernel's time at
   * 250,000 forwards, which an apply arriving meanwhile should not compete with).
   */
  async drift(options: { elements: boolean; signal?: AbortSignal } = { elements: true }): Promise<string[] | undefined> {
    const applied = this.applied;
    if (!applied) return undefined;
    const listing = await listTable(TABLE.family, TABLE.table, this.target, { terse: !options.elements, signal: options.signal });
    if (!listing) return [`table ${TABLE.family} ${TABLE.table} is missing`];
    const expected = options.elements ? contentOfCommands(renderRuleset(applied.state, this.render)) : applied.content;
    return driftBetween(expected, applied.listedRules, contentOfListing(listing), options);
  }

  /** Forwards and firewalls as the live table has them. */
  async observe(): Promise<{ forwards: ObservedForward[]; firewalls: (ObservedFirewall & { unrecognized: number })[] }> {
    return observeListing((await listTable(TABLE.family, TABLE.table, this.target)) ?? []);
  }

  /**
   * The table's counters. Only what holds them is listed: the counter sets `fwd4_ctr` and
   * `fwd6_ctr` (nft 1.0.6 fetches every element of the table for `list counters`, `list tables`
   * and even a terse `list table`, but only the named set's for `list set`), and the named
   * counters only when instance counters are kept. The sets' listings are scanned, not parsed
   * (see `scanCounterSet`).
   */
  async counters(): Promise<DataplaneCounters> {
    const result: DataplaneCounters = { forwards: new Map(), instances: new Map(), forwardEpoch: 'none', rateLimited: new Map() };
    const list = (...args: string[]) => run('nft', ['-j', 'list', ...args], this.target);
    let sets: ScannedCounterSet[];
    const ids = new Map<string, string>();
    try {
      sets = await Promise.all(['fwd4_ctr', 'fwd6_ctr'].map(async (name) => scanCounterSet(await list('set', TABLE.family, TABLE.table, name), this.ids, ids)));
    } catch {
      return result; // no table: no counters
    }
    // set handles restart with a re-created table, table handles do not: both name the counters' life.
    // The table's life is remembered from this process's last replace; only a table it did not
    // write costs a `list tables` (every element of the table).
    const life = this.tableLife ?? (await this.liveTableHandle(list));
    result.forwardEpoch = [`t${life}`, ...sets.map((s) => s.handle)].join('.');
    // a forward's packets are counted on each of its elements (one per address, protocol and port; a
    // forward's elements are all of one family)
    const [v4, v6] = sets as [ScannedCounterSet, ScannedCounterSet];
    result.forwards = v4.forwards;
    for (const [id, counter] of v6.forwards) result.forwards.set(id, counter);
    this.ids = ids;
    // only a host with rate limits pays for reading their (small) counter sets
    if (this.applied?.state.instances.some((i) => i.portForwards.some((f) => f.rateLimit))) {
      try {
        const limited = await Promise.all(
          Object.values(RATE_LIMIT_COUNTER_SET).map(async (name) => scanCounterSet(await list('set', TABLE.family, TABLE.table, name), this.ids)),
        );
        for (const set of limited) for (const [id, counter] of set.forwards) result.rateLimited.set(id, counter.packets);
      } catch {
        // a table of an older version without the sets: nothing counted yet
      }
    }
    if (!this.render.instanceCounters) return result;
    let named: Record<string, Record<string, unknown>>[];
    try {
      named = (JSON.parse(await list('counters', 'table', TABLE.family, TABLE.table)) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
    } catch {
      return result;
    }
    for (const object of named) {
      const counter = object.counter as { name: string; packets: number; bytes: number } | undefined;
      if (!counter) continue;
      const value = { packets: counter.packets, bytes: counter.bytes };
      const inst = /^ctr_(in|out)_(.+)$/.exec(counter.name);
      if (inst) {
        const id = idFromName(inst[2]!);
        const entry = result.instances.get(id) ?? { in: { packets: 0, bytes: 0 }, out: { packets: 0, bytes: 0 } };
        entry[inst[1] as 'in' | 'out'] = value;
        result.instances.set(id, entry);
      }
    }
    return result;
  }

  /** The live table's handle, or '-' when it is gone. */
  private async liveTableHandle(list: (...args: string[]) => Promise<string>): Promise<string> {
    const tables = (JSON.parse(await list('tables', TABLE.family)) as { nftables: { table?: { name: string; handle: number } }[] }).nftables;
    return String(tables.find((t) => t.table?.name === TABLE.table)?.table?.handle ?? '-');
  }

  /**
   * Removes one instance's chains, counters, dispatch entries and forwards; succeeds when they
   * are already gone. Returns whether anything was there.
   */
  async release(instanceId: string): Promise<boolean> {
    if (this.applied) {
      const { state } = this.applied;
      if (!state.instances.some((i) => i.id === instanceId)) return false;
      await this.apply({ ...state, instances: state.instances.filter((i) => i.id !== instanceId) });
      return true;
    }
    const listing = await listTable(TABLE.family, TABLE.table, this.target);
    if (!listing) return false;
    const commands = releaseCommands(listing, [instanceId]);
    await this.nft.apply(commands);
    return commands.length > 0;
  }

  /** Removes what belongs to instances not in `validInstanceIds`; returns their ids. */
  async gc(validInstanceIds: readonly string[]): Promise<string[]> {
    const valid = new Set(validInstanceIds);
    if (this.applied) {
      const { state } = this.applied;
      const orphans = state.instances.filter((i) => !valid.has(i.id)).map((i) => i.id);
      if (orphans.length > 0) await this.apply({ ...state, instances: state.instances.filter((i) => valid.has(i.id)) });
      return orphans;
    }
    const listing = await listTable(TABLE.family, TABLE.table, this.target);
    if (!listing) return [];
    const orphans = instancesIn(listing).filter((id) => !valid.has(id));
    if (orphans.length > 0) await this.nft.apply(releaseCommands(listing, orphans));
    return orphans;
  }

  /** Deletes the whole table; succeeds when it is already gone. */
  async remove(): Promise<void> {
    this.applied = undefined;
    this.tableLife = undefined;
    // with the scratch table a replace killed half-way left behind (`spellRules`)
    await this.nft.apply([TABLE.table, SPELL_TABLE].flatMap((name) => deleteTableCommands(TABLE.family, name)));
  }

  /** Rule listings after an incremental step: re-read only the chains whose rules changed. */
  private async relist(previous: Applied, next: TableContent): Promise<Map<string, string[]>> {
    const listedRules = new Map<string, string[]>();
    for (const [chain, rules] of next.rules) {
      const old = previous.content.rules.get(chain);
      const unchanged = old && JSON.stringify(old) === JSON.stringify(rules) && previous.listedRules.has(chain);
      listedRules.set(chain, unchanged ? previous.listedRules.get(chain)! : await this.listChainRules(chain));
    }
    return listedRules;
  }

  /** The names of the table's chains; none when the table is not there (`list chains` fetches no set elements). */
  private async chainNames(): Promise<string[]> {
    const out = JSON.parse(await run('nft', ['-j', 'list', 'chains', TABLE.family], this.target)) as {
      nftables: { chain?: { table: string; name: string } }[];
    };
    return out.nftables.flatMap((o) => (o.chain?.table === TABLE.table ? [o.chain.name] : []));
  }

  private async listChainRules(chain: string): Promise<string[]> {
    const out = JSON.parse(await run('nft', ['-j', 'list', 'chain', TABLE.family, TABLE.table, chain], this.target)) as { nftables: Record<string, unknown>[] };
    return contentOfListing(out.nftables.filter((o) => !('metainfo' in o))).rules.get(chain) ?? [];
  }
}

/**
 * The commands taking the table from `previous` to `state` (whose frame is `content`), or undefined
 * when the table must be replaced: the frame's difference, then the element changes of only the
 * forwards that changed (`options` as the frame was rendered with). When the public addresses changed, every forward may have: diff all.
 * Pure: what an incremental apply sends to `nft -j`.
 */
export function incrementalChange(
  previous: { state: DesiredState; content: TableContent },
  state: DesiredState,
  content: TableContent,
  options: RenderOptions = {},
): NftCommand[] | undefined {
  const forwards = changedForwards(previous.state, state);
  if (!forwards) return incrementalCommands(contentOfCommands(renderRuleset(previous.state, options)), contentOfCommands(renderRuleset(state, options)));
  const frame = incrementalCommands(previous.content, content);
  const elements = incrementalCommands(
    contentOfCommands(renderForwardMaps(forwards.before, state.publicAddresses)),
    contentOfCommands(renderForwardMaps(forwards.after, state.publicAddresses)),
  );
  return frame && elements && [...frame, ...elements];
}

/** The scratch table where `spellRules` lists a frame's rules (in the family of `TABLE`). */
export const SPELL_TABLE = 'gatehouse_spell';

/** A frame's command for the scratch table: the same object in `SPELL_TABLE`, a chain without its hook (a plain chain). */
function scratchCommand(command: NftCommand): NftCommand {
  const [[verb, objects]] = Object.entries(command) as [[string, Record<string, Record<string, unknown>>]];
  const [[kind, body]] = Object.entries(objects) as [[string, Record<string, unknown>]];
  const { type: _type, hook: _hook, prio: _prio, policy: _policy, ...plain } = body;
  return { [verb]: { [kind]: { ...(kind === 'chain' ? plain : body), table: SPELL_TABLE } } };
}

/** Instance ids that have firewall chains in a listing. */
function instancesIn(listing: readonly Record<string, unknown>[]): string[] {
  const ids = new Set<string>();
  for (const o of listing) {
    const m = /^fw_(?:in|out)_(.+)$/.exec(((o.chain as { name?: string } | undefined)?.name as string | undefined) ?? '');
    if (m) ids.add(idFromName(m[1]!));
  }
  return [...ids];
}

/** Commands removing the given instances' objects from a listed table (no render needed). */
function releaseCommands(listing: readonly Record<string, unknown>[], instanceIds: readonly string[]): NftCommand[] {
  const content = contentOfListing(listing);
  const chains = new Set(instanceIds.flatMap((id) => [firewallChainName(id, 'in'), firewallChainName(id, 'out')]));
  const counters = new Set(instanceIds.flatMap((id) => [instanceCounterName(id, 'in'), instanceCounterName(id, 'out')]));
  const addresses = new Set<string>();
  const deletions: NftCommand[] = [];
  const remove = (map: string, keys: unknown[]) => keys.length > 0 && deletions.push({ delete: { element: { ...TABLE, name: map, elem: keys } } });
  // an instance's addresses: in `inst4`/`inst6` (and, in a table of an older version, only in the dispatch and counter maps)
  for (const map of ['inst4', 'inst6', 'fw_in4', 'fw_in6', 'fw_out4', 'fw_out6', 'ctr_in4', 'ctr_in6', 'ctr_out4', 'ctr_out6']) {
    const gone = [...(content.elements.get(map)?.values() ?? [])].filter(([, data]) => {
      const target = (data as { jump?: { target: string } }).jump?.target ?? data;
      return typeof target === 'string' && (chains.has(target) || counters.has(target));
    });
    for (const [key] of gone) addresses.add(key as string);
    remove(
      map,
      gone.map(([key]) => key),
    );
  }
  for (const family of [4, 6]) {
    const keys = [...(content.elements.get(`fwd${family}_addr`)?.values() ?? [])].filter(([, a]) => addresses.has(a as string)).map(([k]) => k);
    // the forwards' counters go with their `fwd*_ctr` elements
    for (const suffix of ['addr', 'port', 'ctr']) {
      const present = content.elements.get(`fwd${family}_${suffix}`) ?? new Map();
      remove(
        `fwd${family}_${suffix}`,
        keys.filter((k) => present.has(JSON.stringify(k))),
      );
    }
  }
  const commands = [...deletions];
  for (const chain of chains) {
    if (!content.defs.has(`chain:${chain}`)) continue;
    commands.push({ flush: { chain: { ...TABLE, name: chain } } }, { delete: { chain: { ...TABLE, name: chain } } });
  }
  for (const name of counters) if (content.defs.has(`counter:${name}`)) commands.push({ delete: { counter: { ...TABLE, name } } });
  return commands;
}
