/**
 * Coexistence with a host's own ban lists (issue 19, item 6), in a lab: a CrowdSec-style nft table
 * (`inet crowdsec-lab`: a set of banned addresses, dropped in chains on the input and forward hooks
 * at priority -10) and a fail2ban-style iptables chain (`F2B-LAB`, jumped to from FORWARD, one
 * address dropped). Through every step of ours — first apply, an incremental edit, a replace (the
 * repair after drift), a deletion of our table by someone else and its repair, removing everything
 * — their tables keep every rule, set element and handle in the same order (compared as listed,
 * counters aside), and both banned sources stay banned from our forward while another source gets
 * through: their filter hooks see the forwarded connections after our DNAT.
 */
import { run } from '@gatehouse/sdk';
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer, type Outcome } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARD, oneForwardState as state } from './support/one-forward.js';
import { Dataplane } from '../src/dataplane.js';
import { applyNft, listTable } from '../src/nft.js';
import { TABLE } from '../src/render.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const FOREIGN = { family: 'inet', name: 'crowdsec-lab' } as const;
const CROWDSEC_BANNED = '198.51.100.2';
const F2B_BANNED = '198.51.100.4';
const ALLOWED = '198.51.100.3';

/** The foreign table: a ban set and drop rules on the input and forward hooks, as CrowdSec's nftables bouncer makes them. */
const crowdsecTable = [
  { add: { table: FOREIGN } },
  { add: { set: { ...FOREIGN, table: FOREIGN.name, name: 'crowdsec-blacklists', type: 'ipv4_addr', flags: ['timeout'] } } },
  { add: { element: { ...FOREIGN, table: FOREIGN.name, name: 'crowdsec-blacklists', elem: [CROWDSEC_BANNED] } } },
  ...(['input', 'forward'] as const).flatMap((hook) => [
    { add: { chain: { family: FOREIGN.family, table: FOREIGN.name, name: `crowdsec-chain-${hook}`, type: 'filter', hook, prio: -10, policy: 'accept' } } },
    {
      add: {
        rule: {
          family: FOREIGN.family,
          table: FOREIGN.name,
          chain: `crowdsec-chain-${hook}`,
          expr: [
            { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '@crowdsec-blacklists' } },
            { counter: null },
            { drop: null },
          ],
        },
      },
    },
  ]),
];

// rule counters change with traffic; everything else of theirs must stay exactly as it was
const withoutCounters = (key: string, value: unknown) => (key === 'counter' || key === 'packets' || key === 'bytes' ? undefined : value);

describe.skipIf(!available && !REQUIRE_SYSTEM)('coexistence with foreign ban lists (CrowdSec-style nft table, fail2ban-style iptables chain)', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  const servers: LabServer[] = [];
  let dp: Dataplane;
  let baseline: string;

  /** Their state: the foreign nft table and iptables' filter table (iptables-nft's `ip filter`), as listed, without counters. */
  const theirs = async () => {
    const nft = await listTable(FOREIGN.family, FOREIGN.name, { netns: host.name });
    const iptables = await listTable('ip', 'filter', { netns: host.name });
    return JSON.stringify({ nft, iptables }, withoutCounters);
  };
  async function connectFrom(from: string): Promise<Outcome> {
    const code = `const s=require('net').connect({host:'198.51.100.1',port:10022,localAddress:${JSON.stringify(from)},timeout:800});let d='';s.on('data',b=>d+=b);s.on('end',()=>console.log('got:'+d));s.on('timeout',()=>{console.log('timeout');s.destroy()});s.on('error',e=>console.log('error:'+e.code))`;
    return (await client.exec(process.execPath, ['-e', code])).trim() as Outcome;
  }
  /** Their rules unchanged, both banned sources kept out of our forward, the allowed one let in. */
  async function expectCoexistence(step: string, forwarding = true): Promise<void> {
    expect(await theirs(), step).toBe(baseline);
    expect(await connectFrom(CROWDSEC_BANNED), `${step}: CrowdSec-banned source`).toBe('timeout');
    // without a forward nothing is forwarded: the host itself refuses, and FORWARD has nothing to ban
    if (!forwarding) return;
    expect(await connectFrom(F2B_BANNED), `${step}: fail2ban-banned source`).toBe('timeout');
    expect(await eventually(() => connectFrom(ALLOWED)), `${step}: allowed source`).toBe('got:vm');
  }

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm');
    const { ifA } = await lab.link(client, `${CROWDSEC_BANNED}/24`, host, '198.51.100.1/24');
    for (const a of [ALLOWED, F2B_BANNED]) await client.exec('ip', ['addr', 'add', `${a}/24`, 'dev', ifA]);
    await lab.link(host, '10.0.0.1/24', vm, '10.0.0.5/24');
    await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    servers.push(tcpServer(vm, 2222, 'vm'));
    expect(await eventually(() => tcpOutcome(host, '10.0.0.5', 2222))).toBe('got:vm');
    // their rules come first, as on a host where the ban tools ran before the agent
    await applyNft(crowdsecTable, { netns: host.name });
    for (const args of [
      ['-N', 'F2B-LAB'],
      ['-A', 'F2B-LAB', '-s', `${F2B_BANNED}/32`, '-j', 'DROP'],
      ['-A', 'F2B-LAB', '-j', 'RETURN'],
      ['-I', 'FORWARD', '1', '-j', 'F2B-LAB'],
    ]) {
      await run('iptables', ['-w', ...args], { netns: host.name });
    }
    baseline = await theirs();
    dp = new Dataplane({ netns: host.name });
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    await dp?.close();
    await lab.cleanup();
  });

  it('keeps their rules and bans through apply, edit, replace, repair and removal of ours', async () => {
    expect(await dp.apply(state(1, FORWARD))).toMatchObject({ mode: 'replace' });
    await expectCoexistence('first apply');
    // an allow-list and a rate limit put rules in fwd_sources: ours, not theirs
    const edited = { ...FORWARD, sourceCidrs: ['198.51.100.0/24'], rateLimit: { perSource: 1000, total: null, burst: 100, action: 'drop' as const } };
    expect(await dp.apply(state(2, edited))).toMatchObject({ mode: 'incremental' });
    await expectCoexistence('incremental edit');
    expect(await dp.apply(state(3, edited), { force: true })).toMatchObject({ mode: 'replace' });
    await expectCoexistence('replace (repair)');
    // someone deletes our table: drift names it, the repair puts it back, theirs untouched
    await run('nft', ['delete', 'table', TABLE.family, TABLE.table], { netns: host.name });
    expect(await dp.drift()).toEqual([`table ${TABLE.family} ${TABLE.table} is missing`]);
    expect(await theirs()).toBe(baseline);
    expect(await dp.apply(state(4, edited), { force: true })).toMatchObject({ mode: 'replace' });
    expect(await dp.drift()).toEqual([]);
    await expectCoexistence('repair after our table was deleted');
    // the foreign rules saw the forwarded connections of the banned source (after our DNAT)
    const listing = (await listTable(FOREIGN.family, FOREIGN.name, { netns: host.name }))!;
    const forwardRule = listing.find((o) => (o.rule as { chain?: string } | undefined)?.chain === 'crowdsec-chain-forward')!.rule as {
      expr: Record<string, any>[];
    };
    expect(forwardRule.expr.find((s) => 'counter' in s)!.counter.packets).toBeGreaterThan(0);
    // nothing desired: our table goes, theirs stays
    expect(await dp.apply({ ...state(5, FORWARD), instances: [] })).toMatchObject({ changed: true });
    expect(await listTable(TABLE.family, TABLE.table, { netns: host.name })).toBeUndefined();
    await expectCoexistence('our table removed', false);
    expect(await connectFrom(ALLOWED)).toBe('error:ECONNREFUSED');
  });
});
