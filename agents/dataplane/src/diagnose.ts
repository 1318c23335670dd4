/**
 * Forward diagnosis on a dataplane host: the troubleshooting matrix of the operations guide run
 * against the live host, each check answering with its evidence.
 *
 * | check             | fault                   | evidence                                                                 |
 * | ----------------- | ----------------------- | ------------------------------------------------------------------------ |
 * | `forward`         | NOT_APPLIED             | the forward is not in the applied state                                  |
 * | `instance`        | INSTANCE_STOPPED        | the backend's `running: false`, or the instance's NICs not on the host   |
 * | `ipForwarding`    | IP_FORWARDING_DISABLED  | `net.ipv4.ip_forward` (`net.ipv6.conf.all.forwarding`) is 0              |
 * | `foreignRules`    | FOREIGN_RULE_DROP       | a base chain of another table on the forward or prerouting hook with policy drop, or a drop rule there that counted packets (Docker's FORWARD policy, fail2ban/CrowdSec sets) |
 * | `sourceAllowList` | SOURCE_NOT_ALLOWED      | the given source outside the allow-list, or the allow-list rule's counter |
 * | `firewall`        | FIREWALL_DROP           | the first rule of the instance's inbound firewall matching the forwarded connection (or its policy) refuses it, with the rule's counter |
 * | `target`          | TARGET_NOT_LISTENING / TARGET_UNREACHABLE | a TCP connect from the host to the target: refused, or no answer |
 * | `rateLimit`       | RATE_LIMITED            | the counters of the forward's rate limit rules                           |
 * | `replyPath`       | REPLY_PATH_BROKEN       | forwarded connections in conntrack that never saw a reply while the target answers the host itself |
 *
 * Nothing is changed on the host: the checks read sysctls, `nft -j list`, `conntrack -L` and make
 * one TCP connection from the host to the target. Drop rules nftables does not count (iptables-legacy
 * tables, foreign rules without counters) can only be seen through their chain policy.
 */
import { overallVerdict, run, type DesiredPortForward, type DesiredState, type ExecTarget, type ForwardDiagnosis, type ForwardFinding } from '@gatehouse/sdk';
import { observeListing } from './observe.js';
import { TABLE, firewallChainName } from './render.js';

type Obj = Record<string, any>;

/** What the driver adds to a diagnosis: what its backend says of the instance. */
export interface DiagnosisContext {
  /** The backend's word on the instance: false when stopped; undefined when it does not say. */
  instanceRunning?: boolean;
  /** False when none of the instance's NICs is on the host. */
  nicsOnHost?: boolean;
  /** How long the connect to the target may take (default 1,500 ms). */
  connectTimeoutMs?: number;
}

/** An address as an integer and its family, or undefined. */
function parseAddress(text: string): { v6: boolean; value: bigint } | undefined {
  if (text.includes(':')) {
    const [head, tail = ''] = text.split('::') as [string, string?];
    const parts = (s: string) => (s === '' ? [] : s.split(':'));
    const h = parts(head);
    const t = text.includes('::') ? parts(tail) : [];
    const groups = text.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
    if (groups.length !== 8) return undefined;
    return { v6: true, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n) };
  }
  const octets = text.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255))) return undefined;
  return { v6: false, value: octets.reduce((acc, o) => (acc << 8n) | BigInt(o), 0n) };
}

/** Whether `cidr` ("10.0.0.0/8", "2001:db8::/32") contains `address`. */
export function cidrContains(cidr: string, address: string): boolean {
  const [base, length] = cidr.split('/');
  const a = parseAddress(address);
  const b = parseAddress(base!);
  if (!a || !b || a.v6 !== b.v6) return false;
  const bits = a.v6 ? 128n : 32n;
  const len = BigInt(length ?? bits);
  const shift = bits - len;
  return a.value >> shift === b.value >> shift;
}

/** The packets of a rule's counter statement, or undefined without one. */
function counterOf(expr: Obj[]): number | undefined {
  const c = expr.find((s) => 'counter' in s)?.counter as { packets?: number } | undefined;
  return typeof c?.packets === 'number' ? c.packets : undefined;
}

/** What a fwd_sources rule matches: host address, protocol and host port range. */
function forwardRuleTarget(expr: Obj[]): { address?: string; l4?: string; ports?: [number, number] } {
  const out: { address?: string; l4?: string; ports?: [number, number] } = {};
  for (const s of expr) {
    const m = s.match as Obj | undefined;
    if (!m || m.op !== '==') continue;
    const left = m.left as Obj;
    if (left.payload?.field === 'daddr') out.address = m.right as string;
    if (left.meta?.key === 'l4proto') out.l4 = m.right as string;
    if (left.payload?.field === 'dport') {
      // nft lists `meta l4proto tcp th dport N` back as `tcp dport N`
      if (left.payload.protocol === 'tcp' || left.payload.protocol === 'udp') out.l4 = left.payload.protocol;
      const r = m.right as number | { range: [number, number] };
      out.ports = typeof r === 'number' ? [r, r] : r.range;
    }
  }
  return out;
}

/** The rules of `chain` in the listing, in order. */
function rulesOf(listing: readonly Obj[], chain: string): Obj[][] {
  return listing.filter((o) => o.rule?.chain === chain).map((o) => o.rule.expr as Obj[]);
}

/** The fwd_sources rules of one forward (its host addresses, protocols and ports). */
function forwardRules(listing: readonly Obj[], state: DesiredState, f: DesiredPortForward): Obj[][] {
  const v6 = f.targetAddress.includes(':');
  const addresses = new Set(f.hostAddress ? [f.hostAddress] : state.publicAddresses.filter((a) => a.includes(':') === v6));
  const protocols = f.protocol === 'both' ? ['tcp', 'udp'] : [f.protocol];
  return rulesOf(listing, 'fwd_sources').filter((expr) => {
    const t = forwardRuleTarget(expr);
    return t.address !== undefined && addresses.has(t.address) && protocols.includes(t.l4 ?? '') && t.ports?.[0] === f.hostPorts.start && t.ports?.[1] === f.hostPorts.end;
  });
}

const isRateLimit = (expr: Obj[]) => expr.some((s) => 'limit' in s || 'set' in s);
const refuses = (expr: Obj[]) => expr.some((s) => 'drop' in s || 'reject' in s);

/** Connects from the host to the target: 'connected', 'refused', 'timeout' or another error code. */
async function connectFromHost(target: ExecTarget, address: string, port: number, timeoutMs: number): Promise<string> {
  const script = `const s=require('node:net').connect({host:process.argv[1],port:+process.argv[2]});s.setTimeout(+process.argv[3]);s.on('connect',()=>{console.log('connected');s.destroy()});s.on('timeout',()=>{console.log('timeout');s.destroy()});s.on('error',e=>console.log(e.code==='ECONNREFUSED'?'refused':e.code||'error'))`;
  const out = await run(process.execPath, ['-e', script, address, String(port), String(timeoutMs)], { ...target, timeoutMs: timeoutMs + 10_000 });
  return out.trim() || 'error';
}

/** The first line of a sysctl, or undefined when unreadable. */
async function sysctl(target: ExecTarget, path: string): Promise<string | undefined> {
  return (await run('cat', [path], target).catch(() => undefined))?.trim();
}

/**
 * Foreign base chains (any table but ours) on the hooks a forwarded packet passes — prerouting
 * and forward — that drop: by policy, or by a rule that counted packets.
 */
function foreignDrops(ruleset: readonly Obj[], family: 'ip' | 'ip6'): ForwardFinding[] {
  const findings: ForwardFinding[] = [];
  const chains = ruleset.filter((o) => o.chain && o.chain.hook && !(o.chain.family === TABLE.family && o.chain.table === TABLE.table));
  const applies = (f: string) => f === family || f === 'inet';
  for (const { chain } of chains) {
    if (!applies(chain.family) || (chain.hook !== 'forward' && chain.hook !== 'prerouting')) continue;
    const name = `${chain.family} ${chain.table} ${chain.name}`;
    if (chain.policy === 'drop' && chain.hook === 'forward') {
      const accepts = ruleset.filter((o) => o.rule?.family === chain.family && o.rule.table === chain.table && o.rule.chain === chain.name).length;
      findings.push({
        check: 'foreignRules',
        severity: 'FAULT',
        verdict: 'FOREIGN_RULE_DROP',
        detail: `chain ${name} (hook forward, priority ${chain.prio}) has policy drop: forwarded connections its ${accepts} rule(s) do not accept are dropped, whatever Gatehouse's chains accept (Docker sets this)`,
        rule: name,
        objectId: null,
        packets: null,
      });
    }
    for (const o of ruleset) {
      const r = o.rule as Obj | undefined;
      if (!r || r.family !== chain.family || r.table !== chain.table || r.chain !== chain.name) continue;
      const packets = counterOf(r.expr);
      if (!refuses(r.expr) || !packets) continue;
      findings.push({
        check: 'foreignRules',
        severity: 'WARNING',
        verdict: 'FOREIGN_RULE_DROP',
        detail: `rule #${r.handle} of chain ${name} (hook ${chain.hook}, priority ${chain.prio}) dropped ${packets} packet(s): a foreign table (fail2ban, CrowdSec, an admin's) refuses some sources before or beside Gatehouse's chains`,
        rule: `${name} #${r.handle}`,
        objectId: null,
        packets,
      });
    }
  }
  return findings;
}

const pass = (check: string, detail: string): ForwardFinding => ({ check, severity: 'PASS', verdict: 'OK', detail, rule: null, objectId: null, packets: null });

/** Runs the matrix for one forward of the applied state on the host `target`. */
export async function diagnoseForward(
  target: ExecTarget,
  state: DesiredState,
  forwardId: string,
  sourceAddress: string | null | undefined,
  context: DiagnosisContext = {},
): Promise<ForwardDiagnosis> {
  const findings: ForwardFinding[] = [];
  const done = (): ForwardDiagnosis => ({ forwardId, verdict: overallVerdict(findings), findings });
  const instance = state.instances.find((i) => i.portForwards.some((f) => f.id === forwardId));
  const forward = instance?.portForwards.find((f) => f.id === forwardId);
  if (!instance || !forward) {
    findings.push({ check: 'forward', severity: 'FAULT', verdict: 'NOT_APPLIED', detail: `forward ${forwardId} is not in the state applied on this host (revision ${state.revision})`, rule: null, objectId: forwardId, packets: null });
    return done();
  }
  // the instance first: a stopped one explains everything after it
  if (context.instanceRunning === false) {
    findings.push({ check: 'instance', severity: 'FAULT', verdict: 'INSTANCE_STOPPED', detail: `instance "${instance.name}" is stopped (its backend says so)`, rule: null, objectId: instance.id, packets: null });
  } else if (context.nicsOnHost === false) {
    findings.push({ check: 'instance', severity: 'FAULT', verdict: 'INSTANCE_STOPPED', detail: `no NIC of instance "${instance.name}" is on the host: it is stopped or gone`, rule: null, objectId: instance.id, packets: null });
  } else {
    findings.push(pass('instance', `instance "${instance.name}" ${context.instanceRunning === true ? 'runs' : 'has its NICs on the host'}`));
  }

  const v6 = forward.targetAddress.includes(':');
  const family = v6 ? 'ip6' : 'ip';
  const listing = ((await run('nft', ['-j', 'list', 'table', TABLE.family, TABLE.table], target).then((o) => JSON.parse(o).nftables as Obj[]).catch(() => undefined)) ?? []) as Obj[];
  const inTable = observeListing(listing).forwards.some(
    (o) => o.targetAddress === forward.targetAddress && o.hostPort === forward.hostPorts.start && o.targetPort === forward.targetPorts.start,
  );
  findings.push(
    inTable
      ? pass('forward', `forward ${forwardId} is in table ${TABLE.family} ${TABLE.table} (revision ${state.revision})`)
      : { check: 'forward', severity: 'FAULT', verdict: 'NOT_APPLIED', detail: `forward ${forwardId} is in the applied state but not in table ${TABLE.family} ${TABLE.table}: the apply failed or the table was removed`, rule: null, objectId: forwardId, packets: null },
  );

  // routing
  const forwardingPath = v6 ? '/proc/sys/net/ipv6/conf/all/forwarding' : '/proc/sys/net/ipv4/ip_forward';
  const sysctlName = v6 ? 'net.ipv6.conf.all.forwarding' : 'net.ipv4.ip_forward';
  const forwarding = await sysctl(target, forwardingPath);
  findings.push(
    forwarding === '0'
      ? { check: 'ipForwarding', severity: 'FAULT', verdict: 'IP_FORWARDING_DISABLED', detail: `${sysctlName} = 0: the host does not route forwarded connections to the instance`, rule: sysctlName, objectId: null, packets: null }
      : pass('ipForwarding', `${sysctlName} = ${forwarding ?? 'unreadable'}`),
  );

  // foreign tables
  const ruleset = ((await run('nft', ['-j', 'list', 'ruleset'], target).then((o) => JSON.parse(o).nftables as Obj[]).catch(() => undefined)) ?? []) as Obj[];
  const foreign = foreignDrops(ruleset, family);
  findings.push(...(foreign.length > 0 ? foreign : [pass('foreignRules', 'no other table drops on the prerouting or forward hooks')]));

  // the source allow-list
  const mine = forwardRules(listing, state, forward);
  if (forward.sourceCidrs.length === 0) {
    findings.push(pass('sourceAllowList', 'any source may connect'));
  } else {
    const allowListRules = mine.filter((e) => !isRateLimit(e) && refuses(e));
    const dropped = allowListRules.reduce((n, e) => n + (counterOf(e) ?? 0), 0);
    const list = forward.sourceCidrs.join(', ');
    if (sourceAddress && !forward.sourceCidrs.some((c) => cidrContains(c, sourceAddress))) {
      findings.push({ check: 'sourceAllowList', severity: 'FAULT', verdict: 'SOURCE_NOT_ALLOWED', detail: `source ${sourceAddress} is not in the allow-list (${list}); the allow-list dropped ${dropped} packet(s) so far`, rule: `${TABLE.family} ${TABLE.table} fwd_sources`, objectId: forwardId, packets: dropped });
    } else if (dropped > 0) {
      findings.push({ check: 'sourceAllowList', severity: 'WARNING', verdict: 'SOURCE_NOT_ALLOWED', detail: `the allow-list (${list}) dropped ${dropped} packet(s) from other sources`, rule: `${TABLE.family} ${TABLE.table} fwd_sources`, objectId: forwardId, packets: dropped });
    } else {
      findings.push(pass('sourceAllowList', `allow-list ${list}: nothing dropped${sourceAddress ? `; ${sourceAddress} is in it` : ''}`));
    }
  }

  // the instance's inbound firewall, as the forwarded connection meets it
  findings.push(firewallFinding(listing, instance, forward, sourceAddress));

  // the target itself, from the host
  let targetAnswers = false;
  if (forward.protocol === 'udp') {
    findings.push(pass('target', 'UDP: whether something listens cannot be told from the host without an answer from the service'));
  } else {
    const outcome = await connectFromHost(target, forward.targetAddress, forward.targetPorts.start, context.connectTimeoutMs ?? 1500);
    const where = `${v6 ? `[${forward.targetAddress}]` : forward.targetAddress}:${forward.targetPorts.start}`;
    targetAnswers = outcome === 'connected' || outcome === 'refused';
    if (outcome === 'connected') findings.push(pass('target', `a TCP connect from the host to ${where} succeeded`));
    else if (outcome === 'refused') findings.push({ check: 'target', severity: 'FAULT', verdict: 'TARGET_NOT_LISTENING', detail: `a TCP connect from the host to ${where} was refused: nothing listens on port ${forward.targetPorts.start} in the instance`, rule: null, objectId: null, packets: null });
    else findings.push({ check: 'target', severity: 'FAULT', verdict: 'TARGET_UNREACHABLE', detail: `a TCP connect from the host to ${where} got no answer (${outcome}): the instance does not answer the host at all`, rule: null, objectId: null, packets: null });
  }

  // rate limits
  const limited = mine.filter(isRateLimit).reduce((n, e) => n + (counterOf(e) ?? 0), 0);
  if (!forward.rateLimit) findings.push(pass('rateLimit', 'no rate limit'));
  else if (limited > 0) findings.push({ check: 'rateLimit', severity: 'WARNING', verdict: 'RATE_LIMITED', detail: `the rate limits (${describeLimit(forward)}) ${forward.rateLimit.action === 'drop' ? 'dropped' : 'refused'} ${limited} new connection(s)`, rule: `${TABLE.family} ${TABLE.table} fwd_sources`, objectId: forwardId, packets: limited });
  else findings.push(pass('rateLimit', `rate limits (${describeLimit(forward)}): nothing over them`));

  // the way back: connections DNATed to the target that never saw a reply
  findings.push(await replyPathFinding(target, forward, targetAnswers));
  return done();
}

function describeLimit(f: DesiredPortForward): string {
  const l = f.rateLimit!;
  return [l.perSource !== null ? `${l.perSource}/s per source` : null, l.total !== null ? `${l.total}/s in all` : null, `burst ${l.burst}`].filter(Boolean).join(', ');
}

/** The first rule of the instance's inbound firewall that the forwarded connection matches (rules with another source are skipped), or its policy. */
function firewallFinding(listing: readonly Obj[], instance: DesiredState['instances'][number], forward: DesiredPortForward, source: string | null | undefined): ForwardFinding {
  const inbound = instance.firewall.rules.filter((r) => r.direction === 'inbound');
  const chain = firewallChainName(instance.id, 'in');
  const live = rulesOf(listing, chain);
  const l4 = forward.protocol === 'both' ? ['tcp', 'udp'] : [forward.protocol];
  const port = forward.targetPorts.start;
  const skipped: string[] = [];
  for (const [n, rule] of inbound.entries()) {
    if (rule.protocol !== 'all' && !l4.includes(rule.protocol)) continue;
    if (rule.ports.length > 0 && !rule.ports.some((p) => port >= p.start && port <= p.end)) continue;
    if (rule.destinationCidr && !cidrContains(rule.destinationCidr, forward.targetAddress)) continue;
    if (rule.sourceCidr && (!source || !cidrContains(rule.sourceCidr, source))) {
      if (!source && rule.action !== 'allow') skipped.push(rule.id);
      continue;
    }
    const packets = live[n] ? (counterOf(live[n]!) ?? null) : null;
    if (rule.action === 'allow') return pass('firewall', `inbound firewall rule ${rule.id} (priority ${rule.priority}) allows ${forward.protocol} port ${port}`);
    return {
      check: 'firewall',
      severity: 'FAULT',
      verdict: 'FIREWALL_DROP',
      detail: `inbound firewall rule ${rule.id} (priority ${rule.priority}, ${rule.action}${rule.ports.length ? ` ports ${rule.ports.map((p) => (p.start === p.end ? p.start : `${p.start}-${p.end}`)).join(',')}` : ''}${rule.sourceCidr ? ` from ${rule.sourceCidr}` : ''}) of instance "${instance.name}" refuses ${forward.protocol} port ${port}; it counted ${packets ?? 'no'} packet(s)`,
      rule: `${TABLE.family} ${TABLE.table} ${chain} #${n + 1}`,
      objectId: rule.id,
      packets,
    };
  }
  const policy = instance.firewall.inboundPolicy;
  if (policy === 'allow') {
    return skipped.length > 0
      ? { check: 'firewall', severity: 'WARNING', verdict: 'FIREWALL_DROP', detail: `inbound firewall rule(s) ${skipped.join(', ')} of instance "${instance.name}" refuse some sources on port ${port}; others pass`, rule: `${TABLE.family} ${TABLE.table} ${chain}`, objectId: skipped[0]!, packets: null }
      : pass('firewall', `the inbound firewall of instance "${instance.name}" lets port ${port} in`);
  }
  const packets = live.length > 0 ? (counterOf(live.at(-1)!) ?? null) : null;
  return {
    check: 'firewall',
    severity: 'FAULT',
    verdict: 'FIREWALL_DROP',
    detail: `no inbound firewall rule of instance "${instance.name}" allows ${forward.protocol} port ${port}: its inbound policy (${policy}) refuses it; the policy counted ${packets ?? 'no'} packet(s)`,
    rule: `${TABLE.family} ${TABLE.table} ${chain} policy`,
    objectId: instance.id,
    packets,
  };
}

/**
 * Forwarded connections to the target in conntrack that never saw a reply. With the target
 * answering the host itself, their replies go another way: asymmetric routing (the instance's
 * default route is not this host) and no masquerade.
 */
async function replyPathFinding(target: ExecTarget, forward: DesiredPortForward, targetAnswers: boolean): Promise<ForwardFinding> {
  const protocols = forward.protocol === 'both' ? ['tcp', 'udp'] : [forward.protocol];
  let unreplied = 0;
  let total = 0;
  for (const p of protocols) {
    let out: string;
    try {
      out = await run('conntrack', ['-L', '-p', p, '--reply-src', forward.targetAddress, '--reply-port-src', String(forward.targetPorts.start)], target);
    } catch (err) {
      return pass('replyPath', `conntrack could not be read (${(err as Error).message.slice(0, 160)}): not checked`);
    }
    for (const line of out.split('\n')) {
      if (!line.trim()) continue;
      // only connections that were DNATed: their original destination (the first dst=) is not the target
      if (/\bdst=(\S+)/.exec(line)?.[1] === forward.targetAddress) continue;
      total++;
      if (line.includes('[UNREPLIED]')) unreplied++;
    }
  }
  if (unreplied > 0 && targetAnswers) {
    return {
      check: 'replyPath',
      severity: 'FAULT',
      verdict: 'REPLY_PATH_BROKEN',
      detail: `${unreplied} of ${total} forwarded connection(s) to ${forward.targetAddress}:${forward.targetPorts.start} never saw a reply through this host, though the target answers the host: it replies by another route (check its default route, or masquerade the forward)`,
      rule: null,
      objectId: null,
      packets: unreplied,
    };
  }
  return pass('replyPath', `${total} forwarded connection(s) in conntrack, ${unreplied} without a reply`);
}
