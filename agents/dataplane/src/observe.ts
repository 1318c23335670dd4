/**
 * Reads the `inet gatehouse` table back into the SDK's canonical `ObservedState` (forwards and
 * firewalls; shaping is read from tc), so what is on the host can be compared with what should
 * be. Only the rule shapes `render.ts` writes are recognised; anything else in our chains is
 * reported as unrecognised, which counts as drift.
 */
import {
  sortObservation,
  type Counter,
  type FirewallAction,
  type ObservedFirewall,
  type ObservedFirewallRule,
  type ObservedForward,
  type PortRange,
} from '@gatehouse/sdk';

type Obj = Record<string, unknown>;

/** An id written into a name without its dashes, back in UUID form (other ids unchanged). */
export function idFromName(hex: string): string {
  return /^[0-9a-f]{32}$/.test(hex) ? `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}` : hex;
}

function cidrOf(right: unknown, v6: boolean): string | null {
  if (typeof right === 'string') return `${right}/${v6 ? 128 : 32}`;
  const prefix = (right as { prefix?: { addr: string; len: number } }).prefix;
  return prefix ? `${prefix.addr}/${prefix.len}` : null;
}

function portsOf(right: unknown): PortRange[] {
  const one = (v: unknown): PortRange =>
    typeof v === 'number' ? { start: v, end: v } : { start: (v as { range: [number, number] }).range[0], end: (v as { range: [number, number] }).range[1] };
  const set = (right as { set?: unknown[] }).set;
  return set ? set.map(one) : [one(right)];
}

const ACTIONS: Record<string, FirewallAction> = { return: 'allow', drop: 'drop', reject: 'reject' };

/** One rule of a firewall chain, or undefined when it is not of a shape Gatehouse writes. */
function parseFirewallRule(expr: Obj[], direction: 'inbound' | 'outbound'): ObservedFirewallRule | undefined {
  const rule: ObservedFirewallRule = { direction, protocol: 'all', sourceCidr: null, destinationCidr: null, ports: [], action: 'allow' };
  let verdict = false;
  for (const statement of expr) {
    const [kind, body] = Object.entries(statement)[0] as [string, Obj | null];
    // a refusing rule's counter (its diagnosis evidence) says nothing about what it matches
    if (kind === 'counter') continue;
    if (kind in ACTIONS) {
      rule.action = ACTIONS[kind]!;
      verdict = true;
      continue;
    }
    if (kind !== 'match' || !body || body.op !== '==') return undefined;
    const left = body.left as Obj;
    const payload = left.payload as { protocol: string; field: string } | undefined;
    const meta = left.meta as { key: string } | undefined;
    if (meta?.key === 'l4proto') {
      const right = body.right as unknown;
      if (right === 'tcp' || right === 'udp') rule.protocol = right;
      else if (JSON.stringify(right) === JSON.stringify({ set: ['icmp', 'ipv6-icmp'] })) rule.protocol = 'icmp';
      else return undefined;
    } else if (payload && (payload.protocol === 'tcp' || payload.protocol === 'udp' || payload.protocol === 'th') && payload.field === 'dport') {
      if (payload.protocol !== 'th') rule.protocol = payload.protocol;
      rule.ports = portsOf(body.right);
    } else if (payload && (payload.protocol === 'ip' || payload.protocol === 'ip6') && (payload.field === 'saddr' || payload.field === 'daddr')) {
      const cidr = cidrOf(body.right, payload.protocol === 'ip6');
      if (!cidr) return undefined;
      if (payload.field === 'saddr') rule.sourceCidr = cidr;
      else rule.destinationCidr = cidr;
    } else {
      return undefined;
    }
  }
  return verdict ? rule : undefined;
}

/** Forwards and firewalls as the listing of the table shows them. */
export function observeListing(listing: readonly Obj[]): { forwards: ObservedForward[]; firewalls: (ObservedFirewall & { unrecognized: number })[] } {
  const maps = new Map<string, [unknown, unknown][]>();
  const chains = new Map<string, Obj[][]>();
  for (const object of listing) {
    const [kind, body] = Object.entries(object)[0] as [string, Obj];
    if (kind === 'map') maps.set(body.name as string, (body.elem as [unknown, unknown][] | undefined) ?? []);
    if (kind === 'chain' && !chains.has(body.name as string)) chains.set(body.name as string, []);
    if (kind === 'rule') chains.set(body.chain as string, [...(chains.get(body.chain as string) ?? []), body.expr as Obj[]]);
  }
  // source allow-lists: address . protocol . port range → allowed prefixes
  const sources: { address: string; protocol: string; ports: PortRange; cidrs: string[] }[] = [];
  for (const expr of chains.get('fwd_sources') ?? []) {
    // rate limit rules (a limit, alone or in a set update) say nothing about who may connect
    if (expr.some((statement) => 'limit' in statement || 'set' in statement)) continue;
    let address: string | undefined;
    let protocol: string | undefined;
    let ports: PortRange | undefined;
    let cidrs: string[] = [];
    for (const statement of expr) {
      const m = statement.match as Obj | undefined;
      const payload = (m?.left as Obj | undefined)?.payload as { protocol: string; field: string } | undefined;
      if (!m || !payload) continue;
      if (payload.field === 'daddr') address = m.right as string;
      if (payload.field === 'dport') [protocol, ports] = [payload.protocol, portsOf(m.right)[0]];
      if (payload.field === 'saddr' && m.op === '!=') {
        const set = (m.right as { set?: unknown[] }).set ?? [m.right];
        cidrs = set.map((c) => cidrOf(c, payload.protocol === 'ip6')).filter((c): c is string => c !== null);
      }
    }
    if (address && protocol && ports) sources.push({ address, protocol, ports, cidrs });
  }
  const forwards: ObservedForward[] = [];
  for (const family of [4, 6]) {
    const ports = new Map((maps.get(`fwd${family}_port`) ?? []).map(([k, v]) => [JSON.stringify(k), v as number]));
    for (const [key, address] of maps.get(`fwd${family}_addr`) ?? []) {
      const [hostAddress, protocol, hostPort] = (key as { concat: [string, 'tcp' | 'udp', number] }).concat;
      const source = sources.find((s) => s.address === hostAddress && s.protocol === protocol && s.ports.start <= hostPort && hostPort <= s.ports.end);
      const targetPort = ports.get(JSON.stringify(key));
      if (targetPort === undefined) continue; // half a forward is no forward
      forwards.push({ protocol, hostAddress, hostPort, targetAddress: address as string, targetPort, sourceCidrs: [...(source?.cidrs ?? [])].sort() });
    }
  }
  const firewalls = new Map<string, ObservedFirewall & { unrecognized: number }>();
  for (const [name, rules] of chains) {
    const m = /^fw_(in|out)_(.+)$/.exec(name);
    if (!m) continue;
    const instanceId = idFromName(m[2]!);
    const direction = m[1] === 'in' ? 'inbound' : 'outbound';
    const fw = firewalls.get(instanceId) ?? { instanceId, inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [], unrecognized: 0 };
    firewalls.set(instanceId, fw);
    const parsed = rules.map((expr) => parseFirewallRule(expr, direction));
    // the last rule is the policy: a bare verdict (counted when it refuses)
    const policy = parsed.at(-1);
    const isPolicy =
      policy && policy.protocol === 'all' && !policy.sourceCidr && !policy.destinationCidr && policy.ports.length === 0 && rules.at(-1)!.filter((st) => !('counter' in st)).length === 1;
    if (isPolicy) {
      if (direction === 'inbound') fw.inboundPolicy = policy.action;
      else fw.outboundPolicy = policy.action;
    } else {
      fw.unrecognized++;
    }
    for (const rule of isPolicy ? parsed.slice(0, -1) : parsed) {
      if (rule) fw.rules.push(rule);
      else fw.unrecognized++;
    }
  }
  const sorted = sortObservation({ forwards, firewalls: [...firewalls.values()], shaping: [] });
  // inbound rules first, as in the desired state
  for (const fw of sorted.firewalls) fw.rules.sort((a, b) => (a.direction === b.direction ? 0 : a.direction === 'inbound' ? -1 : 1));
  return { forwards: sorted.forwards, firewalls: sorted.firewalls as (ObservedFirewall & { unrecognized: number })[] };
}

/** A forward counter set as `scanCounterSet` read it. */
export interface ScannedCounterSet {
  /** The set's handle (it restarts with a re-created table). */
  handle: string;
  /** Packets and bytes per forward id, summed over its elements. */
  forwards: Map<string, Counter>;
  /** Whether the listing had to be parsed whole (not nft 1.0.6's spelling). */
  parsed: boolean;
  /** Forward ids by their elements' comment (the next scan's `known`; `ids` when given, shared by several scans). */
  ids: Map<string, string>;
}

// how nft 1.0.6 prints a counted element of ours (jansson's default separators): only the counter and the comment are read
const COUNTED_ELEMENT = /"counter": \{"packets": (\d+), "bytes": (\d+)\}, "comment": "fwd_([^"\\]+)"/g;
const SET_HANDLE =
  /^\{"nftables": \[\{"metainfo": \{[^{}]*\}\}, \{"set": \{"family": "[^"]*", "name": "[^"]*", "table": "[^"]*", "type": (?:"[^"]*"|\[[^\]]*\]), "handle": (\d+)/;

/**
 * The counters of one `nft -j list set` of `fwd4_ctr` / `fwd6_ctr`, per forward (the elements'
 * comment names it). With 250,000 elements the listing is about 30 MB: it is scanned with one
 * regular expression instead of being parsed into 250,000 objects, and a comment already seen
 * (`known`) is not converted again. When the text is not as expected (another nft version's
 * spelling, an element without a counter or comment) it is parsed whole, as before.
 */
export function scanCounterSet(text: string, known: ReadonlyMap<string, string> = new Map(), ids = new Map<string, string>()): ScannedCounterSet {
  const forwards = new Map<string, Counter>();
  const add = (comment: string, packets: number, bytes: number) => {
    let id = ids.get(comment);
    if (id === undefined) {
      id = known.get(comment) ?? idFromName(comment);
      ids.set(comment, id);
    }
    const sum = forwards.get(id);
    if (sum) {
      sum.packets += packets;
      sum.bytes += bytes;
    } else forwards.set(id, { packets, bytes });
  };
  const handle = SET_HANDLE.exec(text)?.[1];
  let elements = 0;
  for (let at = text.indexOf('{"elem": {'); at !== -1; at = text.indexOf('{"elem": {', at + 10)) elements++;
  let matched = 0;
  if (handle !== undefined) {
    for (const m of text.matchAll(COUNTED_ELEMENT)) {
      matched++;
      add(m[3]!, Number(m[1]), Number(m[2]));
    }
  }
  if (handle !== undefined && matched === elements) return { handle, forwards, ids, parsed: false };
  // not the spelling expected: parse it
  forwards.clear();
  const set = (JSON.parse(text) as { nftables: { set?: { handle: number; elem?: unknown[] } }[] }).nftables.find((o) => o.set)?.set;
  for (const e of (set?.elem as { elem?: { comment?: string; counter?: Counter } }[] | undefined) ?? []) {
    const fwd = /^fwd_(.+)$/.exec(e.elem?.comment ?? '');
    if (fwd && e.elem?.counter) add(fwd[1]!, e.elem.counter.packets, e.elem.counter.bytes);
  }
  return { handle: String(set?.handle ?? '-'), forwards, ids, parsed: true };
}
