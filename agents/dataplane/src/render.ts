/**
 * Renders a host's desired state into the content of the `inet gatehouse` table.
 *
 * - Port forwards: per address family, maps keyed on `daddr . l4proto . dport` — one gives the
 *   target address, one the target port — so a new connection costs the same few lookups however
 *   many forwards exist. (nft 1.0.6's JSON parser cannot take a map with concatenated data — it
 *   refuses its elements and crashes on the rule — hence separate maps with plain data.)
 * - Source allow-lists of forwards: a filter chain before DNAT drops other sources.
 * - Hairpin: masquerade of DNATed connections that stay inside the subnet of a forward's target.
 * - Firewalls: a chain per instance and direction, reached from the forward hook through verdict
 *   maps keyed on the instance's addresses — only for the directions that can refuse anything.
 * - Counters: per forward, a counter on each of its elements in a set with the same key, the
 *   element's comment naming the forward (packets towards it, counted before DNAT); optionally
 *   (`instanceCounters`) two named counters per instance (forwarded traffic to and from its
 *   addresses), reached through counter maps. Forwards get no named counters: nft 1.0.6 downloads
 *   every object of the table before any `add element`/`delete element` (to resolve counter
 *   references), and 60,000 named counters made a one-forward change cost over half a second.
 *
 * A host pays per packet only for what it uses (bench/nat-breakdown.ts measures each part): the
 * filter chains in the prerouting and forward hooks, which every packet passes, exist only while a
 * forward, an allow-list, a firewall that can refuse traffic or the instance counters need them,
 * and the hairpin chain only while a forward can hairpin. Adding or removing such a base chain is
 * an incremental change like any other; the maps and sets it uses always exist, so no change needs
 * a table replace for it.
 *
 * Every name is derived from a Gatehouse object id, so the table can be read back and diffed.
 */
import type { DesiredPortForward, DesiredState } from '@gatehouse/sdk';
import type { NftCommand } from './nft.js';

/** The table Gatehouse owns on every host. */
export const TABLE = { family: 'inet', table: 'gatehouse' } as const;

/** One DNAT entry: host address . protocol . port → target address and port, and the forward's counter (its elements' comment). */
export interface ForwardElement {
  /** The protocol by number (`IP_PROTOCOL`): see there. */
  key: { concat: [string, number, number] };
  address: string;
  port: number;
  counter: string;
}

/**
 * Protocol numbers of the forward keys. nft 1.0.6 resolves a protocol name in an element with
 * `getprotobyname`, which reads /etc/protocols on every call (about 5 µs): with three elements per
 * forward that was most of a 250,000-forward install. A number is taken as it is; nft still lists
 * the names (`canonicalKey` in table.ts compares both spellings).
 */
export const IP_PROTOCOL = { tcp: 6, udp: 17 } as const;

/** A Gatehouse object's name inside the table: a prefix and its id without dashes. */
export function objectName(prefix: string, id: string): string {
  return `${prefix}_${id.replace(/-/g, '')}`;
}

/** The name of a forward's counter: the comment on its elements of the `fwd4_ctr`/`fwd6_ctr` sets. */
export const forwardCounterName = (forwardId: string) => objectName('fwd', forwardId);
/** The named counters of an instance's forwarded traffic, towards it (`in`) and from it (`out`). */
export const instanceCounterName = (instanceId: string, direction: 'in' | 'out') => objectName(`ctr_${direction}`, instanceId);

/** The DNAT entries of every forward of one address family, one per host address, protocol and port. */
export function forwardElements(state: DesiredState, family: 4 | 6): ForwardElement[] {
  return elementsOf(
    state.instances.flatMap((i) => i.portForwards),
    state.publicAddresses,
    family,
  );
}

/** Calls `visit` for each DNAT entry of `forwards` in one address family (see `elementsOf`). */
function eachElement(
  forwards: readonly DesiredPortForward[],
  publicAddresses: readonly string[],
  family: 4 | 6,
  visit: (f: DesiredPortForward, address: string, protocol: number, hostPort: number, targetPort: number) => void,
): void {
  const isFamily = (address: string) => address.includes(':') === (family === 6);
  const familyAddresses = publicAddresses.filter(isFamily);
  for (const f of forwards) {
    if (!isFamily(f.targetAddress)) continue;
    const hostAddresses = f.hostAddress ? [f.hostAddress] : familyAddresses;
    const protocols = f.protocol === 'both' ? [IP_PROTOCOL.tcp, IP_PROTOCOL.udp] : [IP_PROTOCOL[f.protocol]];
    for (const address of hostAddresses) {
      for (const protocol of protocols) {
        for (let i = 0; i <= f.hostPorts.end - f.hostPorts.start; i++) visit(f, address, protocol, f.hostPorts.start + i, f.targetPorts.start + i);
      }
    }
  }
}

function elementsOf(forwards: readonly DesiredPortForward[], publicAddresses: readonly string[], family: 4 | 6): ForwardElement[] {
  const elements: ForwardElement[] = [];
  eachElement(forwards, publicAddresses, family, (f, address, protocol, hostPort, port) =>
    elements.push({ key: { concat: [address, protocol, hostPort] }, address: f.targetAddress, port, counter: forwardCounterName(f.id) }),
  );
  return elements;
}

/** Whether two versions of a forward (same id) have the same elements: the fields `elementsOf` reads. */
function sameForwardElements(a: DesiredPortForward, b: DesiredPortForward): boolean {
  // (rate limits are rules of fwd_sources, part of the frame: they do not change elements)
  return (
    a.protocol === b.protocol &&
    a.hostAddress === b.hostAddress &&
    a.hostPorts.start === b.hostPorts.start &&
    a.hostPorts.end === b.hostPorts.end &&
    a.targetAddress === b.targetAddress &&
    a.targetPorts.start === b.targetPorts.start
  );
}

/**
 * The forwards whose elements differ between two states, as they were (`before`) and as they are
 * (`after`), compared by id: rendering and diffing only these gives the element changes a full
 * render and diff would, at a cost that does not grow with the number of forwards' elements.
 * Undefined when the public addresses changed (every forward without a host address changes).
 */
export function changedForwards(from: DesiredState, to: DesiredState): { before: DesiredPortForward[]; after: DesiredPortForward[] } | undefined {
  if (JSON.stringify(from.publicAddresses) !== JSON.stringify(to.publicAddresses)) return undefined;
  const before: DesiredPortForward[] = [];
  const after: DesiredPortForward[] = [];
  // an instance keeps its forwards in the same order from one revision to the next, and a patched
  // document (applyDesiredStatePatch) shares the objects of the unchanged ones: the forwards at the
  // same place at both ends of its list are compared pairwise (a shared object at once), and only
  // those between, where forwards came or went, are matched by id (a Map of 60,000 forwards alone
  // costs tens of milliseconds)
  const previous = new Map(from.instances.map((i) => [i.id, i.portForwards]));
  const next = new Map<string, DesiredPortForward>();
  const rest: DesiredPortForward[][] = [];
  const pair = (a: DesiredPortForward, b: DesiredPortForward): boolean => {
    if (a === b) return true;
    if (a.id !== b.id) return false;
    if (!sameForwardElements(a, b)) {
      before.push(a);
      after.push(b);
    }
    return true;
  };
  for (const instance of to.instances) {
    const old = previous.get(instance.id) ?? [];
    previous.delete(instance.id);
    const now = instance.portForwards;
    let start = 0;
    while (start < old.length && start < now.length && pair(old[start]!, now[start]!)) start++;
    let endOld = old.length;
    let endNow = now.length;
    while (endOld > start && endNow > start && pair(old[endOld - 1]!, now[endNow - 1]!)) {
      endOld--;
      endNow--;
    }
    if (endOld === start && endNow === start) continue;
    const gone = new Set(old.slice(start, endOld));
    for (const f of now.slice(start, endNow)) {
      if (gone.has(f)) gone.delete(f);
      else next.set(f.id, f);
    }
    if (gone.size > 0) rest.push([...gone]);
  }
  for (const old of [...rest, ...previous.values()].flat()) {
    const f = next.get(old.id);
    if (f && sameForwardElements(old, f)) next.delete(old.id);
    else before.push(old); // changed or removed
  }
  for (const f of next.values()) after.push(f); // changed or added (a spread of 60,000 arguments would overflow)
  return { before, after };
}

/**
 * The forward maps and counter sets of both families holding the elements of `forwards` only: with
 * `changedForwards`, two small contents whose difference is the element changes of the forwards.
 */
export function renderForwardMaps(forwards: readonly DesiredPortForward[], publicAddresses: readonly string[]): NftCommand[] {
  return [...forwardMaps(4, elementsOf(forwards, publicAddresses, 4)), ...forwardMaps(6, elementsOf(forwards, publicAddresses, 6))];
}

function forwardMaps(family: 4 | 6, elements: ForwardElement[]): NftCommand[] {
  const addressType = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
  const type = [addressType, 'inet_proto', 'inet_service'];
  const commands: NftCommand[] = [
    { add: { map: { ...TABLE, name: `fwd${family}_addr`, type, map: addressType } } },
    { add: { map: { ...TABLE, name: `fwd${family}_port`, type, map: 'inet_service' } } },
    // the set's counter statement gives every element its own counter, added with the element
    { add: { set: { ...TABLE, name: `fwd${family}_ctr`, type, stmt: [{ counter: null }] } } },
  ];
  if (elements.length > 0) {
    commands.push(
      { add: { element: { ...TABLE, name: `fwd${family}_addr`, elem: elements.map((e) => [e.key, e.address]) } } },
      { add: { element: { ...TABLE, name: `fwd${family}_port`, elem: elements.map((e) => [e.key, e.port]) } } },
      { add: { element: { ...TABLE, name: `fwd${family}_ctr`, elem: elements.map((e) => ({ elem: { val: e.key, comment: e.counter } })) } } },
    );
  }
  return commands;
}

/** The key of the forward maps and counter sets: a packet's destination address . protocol . port. */
function forwardKey(family: 4 | 6) {
  return {
    concat: [
      { payload: { protocol: family === 4 ? 'ip' : 'ip6', field: 'daddr' } },
      { meta: { key: 'l4proto' } },
      { payload: { protocol: 'th', field: 'dport' } },
    ],
  };
}

function nfprotoMatch(family: 4 | 6): NftCommand {
  return { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: family === 4 ? 'ipv4' : 'ipv6' } };
}

function dnatRule(family: 4 | 6): NftCommand {
  const key = forwardKey(family);
  return {
    add: {
      rule: {
        ...TABLE,
        chain: 'prerouting',
        expr: [
          nfprotoMatch(family),
          {
            dnat: {
              family: family === 4 ? 'ip' : 'ip6',
              addr: { map: { key, data: `@fwd${family}_addr` } },
              port: { map: { key, data: `@fwd${family}_port` } },
            },
          },
        ],
      },
    },
  };
}

/**
 * Balanced forwards (`DesiredPortForward.balance`): per forward, host address and protocol a rule
 * in `prerouting` before the map-driven DNAT rule, whose target address comes from an anonymous
 * map keyed on `numgen inc` (each new connection the next slot: exact weighted turns) or, with
 * source affinity, on `jhash` of the source address (one client, one target), modulo the sum of
 * the weights, each target holding as many slots as its weight. The target port still comes from
 * `fwd4_port`/`fwd6_port`, and the forward keeps its elements in the maps and counter sets (its
 * first target in `fwd4_addr`), so counters, allow-lists and rate limits work as for any forward.
 * A nat statement ends the chain for the packet: the map rule never sees a balanced connection.
 */
function balanceRules(state: DesiredState, ruled: readonly DesiredPortForward[]): NftCommand[] {
  const commands: NftCommand[] = [];
  for (const f of ruled) {
    if (!f.balance || f.balance.targets.length === 0) continue;
    const family = f.targetAddress.includes(':') ? 6 : 4;
    const total = f.balance.targets.reduce((sum, t) => sum + t.weight, 0);
    const slots: [unknown, string][] = [];
    let next = 0;
    for (const t of f.balance.targets) {
      slots.push([t.weight === 1 ? next : { range: [next, next + t.weight - 1] }, t.address]);
      next += t.weight;
    }
    const pick = f.balance.sourceAffinity
      ? { jhash: { mod: total, seed: BALANCE_SEED, offset: 0, expr: { payload: { protocol: family === 4 ? 'ip' : 'ip6', field: 'saddr' } } } }
      : { numgen: { mode: 'inc', mod: total, offset: 0 } };
    for (const { match } of forwardMatches(state, f)) {
      const dnat = {
        dnat: {
          family: family === 4 ? 'ip' : 'ip6',
          addr: { map: { key: pick, data: { set: slots } } },
          port: { map: { key: forwardKey(family), data: `@fwd${family}_port` } },
        },
      };
      commands.push({ add: { rule: { ...TABLE, chain: 'prerouting', expr: [...match, dnat] } } });
    }
  }
  return commands;
}
// a fixed seed: a client keeps its target across applies and agent restarts
const BALANCE_SEED = 0x67617465;

/**
 * The filter chain before DNAT that every packet to the host passes: first the forwards' counters
 * (a lookup in the counter set, per family with forwards), then the source allow-lists, one rule
 * per such forward, host address and protocol, dropping other sources. No chain without forwards.
 */
function forwardSourceRules(state: DesiredState, { families, ruled }: ForwardOutline): NftCommand[] {
  if (families.size === 0) return [];
  const commands: NftCommand[] = [{ add: { chain: { ...TABLE, name: 'fwd_sources', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' } } }];
  const counted = (family: 4 | 6) => ({ match: { op: '==', left: forwardKey(family), right: `@fwd${family}_ctr` } });
  for (const family of families) {
    // a lookup that finds an element updates the element's counter
    commands.push({ add: { rule: { ...TABLE, chain: 'fwd_sources', expr: [nfprotoMatch(family), counted(family)] } } });
  }
  for (const f of ruled) {
    if (f.sourceCidrs.length === 0) continue;
    const v6 = f.targetAddress.includes(':');
    const allowed = f.sourceCidrs
      .filter((c) => c.includes(':') === v6)
      .map((c) => {
        const [addr, len] = c.split('/');
        return { prefix: { addr, len: Number(len) } };
      });
    for (const { protocol, match } of forwardMatches(state, f)) {
      const expr = [...match];
      // no prefix of this family in the list: nobody of this family may connect
      if (allowed.length > 0) expr.push({ match: { op: '!=', left: { payload: { protocol, field: 'saddr' } }, right: { set: allowed } } });
      // counted: the forward's diagnosis names what the allow-list dropped
      expr.push({ counter: null }, { drop: null });
      commands.push({ add: { rule: { ...TABLE, chain: 'fwd_sources', expr } } });
    }
  }
  return [...commands, ...rateLimitRules(state, ruled)];
}

/** The dynamic sets holding per-source rate limit buckets, keyed on source . host address . protocol . port. */
export const RATE_LIMIT_SET = { 4: 'fwd4_rl', 6: 'fwd6_rl' } as const;
/**
 * The counter sets of the rate limits, keyed like `fwd4_ctr` (host address . protocol . port) and
 * holding the elements of the forwards with a rate limit (commented with the forward's counter
 * name): a connection a forward's limits refuse is counted on its element, so the agent reads what
 * each forward's limits refused with one `list set`, as it reads the forward counters.
 */
export const RATE_LIMIT_COUNTER_SET = { 4: 'fwd4_rlc', 6: 'fwd6_rlc' } as const;
// a source's bucket is forgotten a minute after its last new connection
const RATE_LIMIT_TIMEOUT_S = 60;
const RATE_LIMIT_SET_SIZE = 65_536;

/** The key of the per-source buckets: a packet's source . destination . protocol . port. */
function rateLimitKey(family: 4 | 6) {
  const protocol = family === 6 ? 'ip6' : 'ip';
  return {
    concat: [
      { payload: { protocol, field: 'saddr' } },
      { payload: { protocol, field: 'daddr' } },
      { meta: { key: 'l4proto' } },
      { payload: { protocol: 'th', field: 'dport' } },
    ],
  };
}

/**
 * The per-source bucket sets, always there (so a forward's first limit is a rule change, not a
 * table replace), and `fwd_rl_anchor`, a chain no hook or jump reaches whose rules update them:
 * the kernel lets rules add elements only to a set created as dynamic, nft 1.0.6's JSON cannot say
 * "dynamic", and nft marks a set so when a rule updating it is in the transaction that creates it.
 */
function rateLimitSets(state: DesiredState, ruled: readonly DesiredPortForward[]): NftCommand[] {
  const commands: NftCommand[] = [{ add: { chain: { ...TABLE, name: 'fwd_rl_anchor' } } }];
  const limited = ruled.filter(hasRateLimit);
  for (const family of [4, 6] as const) {
    const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    const name = RATE_LIMIT_SET[family];
    const counted = RATE_LIMIT_COUNTER_SET[family];
    const elements = elementsOf(limited, state.publicAddresses, family);
    commands.push({ add: { set: { ...TABLE, name: counted, type: [addr, 'inet_proto', 'inet_service'], stmt: [{ counter: null }] } } });
    if (elements.length > 0)
      commands.push({ add: { element: { ...TABLE, name: counted, elem: elements.map((e) => ({ elem: { val: e.key, comment: e.counter } })) } } });
    commands.push(
      {
        add: {
          set: {
            ...TABLE,
            name,
            type: [addr, addr, 'inet_proto', 'inet_service'],
            flags: ['timeout'],
            timeout: RATE_LIMIT_TIMEOUT_S,
            size: RATE_LIMIT_SET_SIZE,
          },
        },
      },
      { add: { rule: { ...TABLE, chain: 'fwd_rl_anchor', expr: [{ set: { op: 'update', elem: rateLimitKey(family), set: `@${name}` } }] } } },
    );
  }
  return commands;
}

/** Whether a forward has a rate limit with a rate (the rules and counter elements are made for those only). */
const hasRateLimit = (f: DesiredPortForward) => !!f.rateLimit && (f.rateLimit.perSource !== null || f.rateLimit.total !== null);

/**
 * New-connection rate limits, after the allow-lists in `fwd_sources`: per forward with a limit,
 * host address and protocol, a rule per source (a token bucket per source in the dynamic set
 * `fwd4_rl`/`fwd6_rl`, keyed on source . host address . protocol . port) and a rule for all sources
 * together (an anonymous limit); a new connection over either is counted (the rule's counter, and
 * the forward's element of `fwd4_rlc`/`fwd6_rlc`) and dropped or refused. Established connections
 * do not pass them (`ct state new`).
 */
function rateLimitRules(state: DesiredState, ruled: readonly DesiredPortForward[]): NftCommand[] {
  const commands: NftCommand[] = [];
  for (const f of ruled) {
    const limit = f.rateLimit;
    if (!limit || !hasRateLimit(f)) continue;
    const family = f.targetAddress.includes(':') ? 6 : 4;
    // the lookup finds the forward's element and counts the refused connection on it
    const counted = { match: { op: '==', left: forwardKey(family), right: `@${RATE_LIMIT_COUNTER_SET[family]}` } };
    for (const { l4, match: forwarded } of forwardMatches(state, f)) {
      const match = [...forwarded, { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } }];
      const over = (rate: number) => ({ limit: { rate, burst: limit.burst, per: 'second', inv: true } });
      const verdict = limit.action === 'drop' ? { drop: null } : l4 === 'tcp' ? TCP_RESET : VERDICT.reject;
      if (limit.perSource !== null) {
        const bucket = { set: { op: 'update', elem: rateLimitKey(family), set: `@${RATE_LIMIT_SET[family]}`, stmt: [over(limit.perSource)] } };
        commands.push({ add: { rule: { ...TABLE, chain: 'fwd_sources', expr: [...match, bucket, { counter: null }, counted, verdict] } } });
      }
      if (limit.total !== null) {
        commands.push({ add: { rule: { ...TABLE, chain: 'fwd_sources', expr: [...match, over(limit.total), { counter: null }, counted, verdict] } } });
      }
    }
  }
  return commands;
}

/** Per host address and protocol of a forward: the matches of its packets (destination address, protocol, host ports). */
function forwardMatches(state: DesiredState, f: DesiredPortForward): { protocol: 'ip' | 'ip6'; l4: string; match: NftCommand[] }[] {
  const v6 = f.targetAddress.includes(':');
  const protocol = v6 ? 'ip6' : 'ip';
  const hostAddresses = f.hostAddress ? [f.hostAddress] : state.publicAddresses.filter((a) => a.includes(':') === v6);
  return hostAddresses.flatMap((address) =>
    (f.protocol === 'both' ? ['tcp', 'udp'] : [f.protocol]).map((l4) => ({
      protocol,
      l4,
      match: [
        { match: { op: '==', left: { payload: { protocol, field: 'daddr' } }, right: address } },
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: l4 } },
        { match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { range: [f.hostPorts.start, f.hostPorts.end] } } },
      ],
    })),
  );
}

/** What the table's frame needs of the forwards. */
interface ForwardOutline {
  /** The address families some forward targets. */
  families: Set<4 | 6>;
  /** The forwards with rules of their own (an allow-list, a rate limit, several targets), in document order. */
  ruled: DesiredPortForward[];
}

/**
 * The forwards' outline in one pass over them: every other part of the frame reads only the few
 * forwards with rules of their own, so a frame among 250,000 plain forwards costs one short loop.
 */
function outlineForwards(state: DesiredState): ForwardOutline {
  const families = new Set<4 | 6>();
  const ruled: DesiredPortForward[] = [];
  for (const instance of state.instances) {
    for (const f of instance.portForwards) {
      if (families.size < 2) families.add(f.targetAddress.includes(':') ? 6 : 4);
      if (f.sourceCidrs.length > 0 || f.rateLimit || f.balance) ruled.push(f);
    }
  }
  return { families, ruled };
}

/**
 * Hairpin: an instance reaching a forward on the host's public address is DNATed back into its own
 * subnet; without SNAT the reply would go straight back from the target and be dropped. Connections
 * that were DNATed and stay inside an instance subnet are masqueraded behind the host. Only a
 * forward's target can be reached so: the subnets of instances with forwards get a rule, and
 * without forwards there is no chain (every new connection would pass it).
 */
function hairpinRules(state: DesiredState, ruled: readonly DesiredPortForward[]): NftCommand[] {
  const subnets = new Set<string>();
  // a balanced forward's other targets can be reached so too
  const targeted = new Set(ruled.flatMap((f) => f.balance?.targets.map((t) => t.instanceId) ?? []));
  for (const instance of state.instances) {
    if (instance.portForwards.length === 0 && !targeted.has(instance.id)) continue;
    for (const nic of instance.nics) for (const a of nic.addresses) if (!a.delegated) subnets.add(`${a.address}/${a.prefixLength}`);
  }
  if (subnets.size === 0) return [];
  const commands: NftCommand[] = [{ add: { chain: { ...TABLE, name: 'postrouting', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' } } }];
  for (const subnet of subnets) {
    const [addr, len] = subnet.split('/');
    const protocol = addr!.includes(':') ? 'ip6' : 'ip';
    // nft masks the host bits of the prefix itself
    const inside = (field: string) => ({ match: { op: '==', left: { payload: { protocol, field } }, right: { prefix: { addr, len: Number(len) } } } });
    commands.push({
      add: {
        rule: {
          ...TABLE,
          chain: 'postrouting',
          expr: [{ match: { op: 'in', left: { ct: { key: 'status' } }, right: 'dnat' } }, inside('saddr'), inside('daddr'), { masquerade: null }],
        },
      },
    });
  }
  return commands;
}

type Instance = DesiredState['instances'][number];
type Rule = Instance['firewall']['rules'][number];
type Direction = 'in' | 'out';

/** The chain holding one instance's rules for one direction. */
export function firewallChainName(instanceId: string, direction: Direction): string {
  return objectName(`fw_${direction}`, instanceId);
}

function cidrMatch(cidr: string, field: 'saddr' | 'daddr'): NftCommand {
  const [addr, len] = cidr.split('/');
  return { match: { op: '==', left: { payload: { protocol: addr!.includes(':') ? 'ip6' : 'ip', field } }, right: { prefix: { addr, len: Number(len) } } } };
}

// allowing returns to the forward chain, so traffic between two instances passes both the
// receiver's inbound and the sender's outbound rules; drop and reject end it at once
// reject answers TCP with a reset and everything else with an ICMP(v6) port-unreachable of the
// packet's own family (icmpx), so IPv4 and IPv6 clients both learn at once
const VERDICT = {
  allow: { return: null },
  drop: { drop: null },
  reject: { reject: { type: 'icmpx', expr: 'port-unreachable' } },
} as const;
const TCP_RESET = { reject: { type: 'tcp reset' } } as const;

function ruleExpr(rule: Rule): NftCommand[] {
  const expr: NftCommand[] = [];
  if (rule.protocol === 'tcp' || rule.protocol === 'udp') expr.push({ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: rule.protocol } });
  if (rule.protocol === 'icmp') expr.push({ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: { set: ['icmp', 'ipv6-icmp'] } } });
  if (rule.ports.length > 0) {
    const ports = rule.ports.map((p) => (p.start === p.end ? p.start : { range: [p.start, p.end] }));
    expr.push({ match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { set: ports } } });
  }
  if (rule.sourceCidr) expr.push(cidrMatch(rule.sourceCidr, 'saddr'));
  if (rule.destinationCidr) expr.push(cidrMatch(rule.destinationCidr, 'daddr'));
  // a refusing rule counts what it refused (the forward's diagnosis names the rule and its counter)
  if (rule.action !== 'allow') expr.push({ counter: null });
  expr.push(rule.action === 'reject' && rule.protocol === 'tcp' ? TCP_RESET : VERDICT[rule.action]);
  return expr;
}

function instanceAddresses(instance: Instance, family: 4 | 6): string[] {
  return instance.nics.flatMap((n) => n.addresses.filter((a) => !a.delegated && a.address.includes(':') === (family === 6)).map((a) => a.address));
}

/** Whether an instance's firewall can refuse anything in one direction: only then is its chain dispatched to. */
function filters(instance: Instance, direction: Direction): boolean {
  const policy = direction === 'in' ? instance.firewall.inboundPolicy : instance.firewall.outboundPolicy;
  const inbound = direction === 'in';
  // allowing returns to the forward chain, as not jumping at all would
  return policy !== 'allow' || instance.firewall.rules.some((r) => (r.direction === 'inbound') === inbound && r.action !== 'allow');
}

/**
 * Per-instance chains for both directions (always there, so `observe` reads every firewall),
 * dispatched from the forward hook by address for the directions that can refuse anything; the
 * instance addresses in `inst4`/`inst6` (no rule reads them) let `release` and `gc` find an
 * instance's forwards in a table they did not write. The forward hook's chain exists only when it
 * has work: instance counters, or a dispatch.
 */
function firewall(state: DesiredState, instanceCounters: boolean): NftCommand[] {
  const commands: NftCommand[] = [];
  const dispatch: Record<string, [string, { jump: { target: string } }][]> = { in4: [], in6: [], out4: [], out6: [] };
  const counted: Record<string, [string, string][]> = { in4: [], in6: [], out4: [], out6: [] };
  const addresses: Record<string, [string, { jump: { target: string } }][]> = { inst4: [], inst6: [] };
  for (const instance of state.instances) {
    for (const direction of ['in', 'out'] as const) {
      const chain = firewallChainName(instance.id, direction);
      const counter = instanceCounterName(instance.id, direction);
      commands.push({ add: { chain: { ...TABLE, name: chain } } });
      if (instanceCounters) commands.push({ add: { counter: { ...TABLE, name: counter } } });
      for (const rule of instance.firewall.rules.filter((r) => (r.direction === 'inbound') === (direction === 'in'))) {
        commands.push({ add: { rule: { ...TABLE, chain, expr: ruleExpr(rule) } } });
      }
      const policy = direction === 'in' ? instance.firewall.inboundPolicy : instance.firewall.outboundPolicy;
      commands.push({ add: { rule: { ...TABLE, chain, expr: policy === 'allow' ? [VERDICT[policy]] : [{ counter: null }, VERDICT[policy]] } } });
      const dispatched = filters(instance, direction);
      for (const family of [4, 6] as const) {
        for (const address of instanceAddresses(instance, family)) {
          if (dispatched) dispatch[`${direction}${family}`]!.push([address, { jump: { target: chain } }]);
          if (instanceCounters) counted[`${direction}${family}`]!.push([address, counter]);
          if (direction === 'in') addresses[`inst${family}`]!.push([address, { jump: { target: chain } }]);
        }
      }
    }
  }
  for (const [name, elements] of Object.entries(addresses)) {
    commands.push({ add: { map: { ...TABLE, name, type: name.endsWith('4') ? 'ipv4_addr' : 'ipv6_addr', map: 'verdict' } } });
    if (elements.length > 0) commands.push({ add: { element: { ...TABLE, name, elem: elements } } });
  }
  const rules: NftCommand[] = [];
  // every forwarded packet is counted for its instance, before established traffic is accepted
  if (instanceCounters) {
    for (const [name, elements] of Object.entries(counted)) {
      const family = name.endsWith('4') ? 4 : 6;
      const protocol = family === 4 ? 'ip' : 'ip6';
      commands.push({ add: { map: { ...TABLE, name: `ctr_${name}`, type: family === 4 ? 'ipv4_addr' : 'ipv6_addr', map: 'counter' } } });
      if (elements.length > 0) commands.push({ add: { element: { ...TABLE, name: `ctr_${name}`, elem: elements } } });
      const field = name.startsWith('in') ? 'daddr' : 'saddr';
      if (state.instances.length === 0) continue;
      rules.push({
        add: {
          rule: {
            ...TABLE,
            chain: 'forward',
            expr: [nfprotoMatch(family), { counter: { map: { key: { payload: { protocol, field } }, data: `@ctr_${name}` } } }],
          },
        },
      });
    }
  }
  // the chain's rules do not depend on which instances are dispatched to: the first firewall
  // rule of an instance adds its map elements (and the chain, when it was not there)
  const dispatching = Object.values(dispatch).some((elements) => elements.length > 0);
  if (rules.length > 0 || dispatching) {
    rules.push({
      add: {
        rule: {
          ...TABLE,
          chain: 'forward',
          expr: [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }],
        },
      },
    });
  }
  for (const [name, elements] of Object.entries(dispatch)) {
    const family = name.endsWith('4') ? 4 : 6;
    commands.push({ add: { map: { ...TABLE, name: `fw_${name}`, type: family === 4 ? 'ipv4_addr' : 'ipv6_addr', map: 'verdict' } } });
    if (elements.length > 0) commands.push({ add: { element: { ...TABLE, name: `fw_${name}`, elem: elements } } });
    if (rules.length === 0) continue;
    const field = name.startsWith('in') ? 'daddr' : 'saddr';
    rules.push({
      add: {
        rule: { ...TABLE, chain: 'forward', expr: [{ vmap: { key: { payload: { protocol: family === 4 ? 'ip' : 'ip6', field } }, data: `@fw_${name}` } }] },
      },
    });
  }
  if (rules.length > 0) commands.push({ add: { chain: { ...TABLE, name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } } }, ...rules);
  return commands;
}

/** What to render besides the desired state. */
export interface RenderOptions {
  /** Without (false) the forward maps and counter sets are left empty: the frame of the table. Default true. */
  forwardElements?: boolean;
  /** The per-instance counters of forwarded traffic (`ctr_in_<id>`, `ctr_out_<id>`), for a driver that reads them. Default true. */
  instanceCounters?: boolean;
}

/**
 * The table's content for `replaceTable`. Without `forwardElements` the forward maps and counter
 * sets are left empty: the frame of the table, which incremental applies diff (their forward
 * elements are diffed forward by forward, see `changedForwards`).
 */
export function renderRuleset(state: DesiredState, options: RenderOptions = {}): NftCommand[] {
  const withElements = options.forwardElements ?? true;
  const outline = outlineForwards(state);
  return [
    ...forwardMaps(4, withElements ? forwardElements(state, 4) : []),
    ...forwardMaps(6, withElements ? forwardElements(state, 6) : []),
    ...rateLimitSets(state, outline.ruled),
    // every new connection to the host passes the DNAT chain: none without forwards
    ...(outline.families.size > 0
      ? [
          { add: { chain: { ...TABLE, name: 'prerouting', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } } },
          ...balanceRules(state, outline.ruled),
          dnatRule(4),
          dnatRule(6),
        ]
      : []),
    ...forwardSourceRules(state, outline),
    ...hairpinRules(state, outline.ruled),
    ...firewall(state, options.instanceCounters ?? true),
  ];
}
