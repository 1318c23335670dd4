/**
 * The Dataplane class in a lab, IPv4 and IPv6: full apply, incremental changes (checked by the
 * commands sent and by real traffic), read-back equal to the desired state, drift detection and
 * repair, counters, release and gc.
 */
import { expectedObservation, diffObservation, run, type DesiredState } from '@gatehouse/sdk';
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, udpOutcome, udpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dataplane } from '../src/dataplane.js';
import { listTable } from '../src/nft.js';
import { TABLE } from '../src/render.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

/** Every Dataplane of this file, closed at the end (each keeps an nft process). */
const dataplanes: Dataplane[] = [];
function dataplane(...args: ConstructorParameters<typeof Dataplane>): Dataplane {
  const made = new Dataplane(...args);
  dataplanes.push(made);
  return made;
}

type Instance = DesiredState['instances'][number];
type Forward = Instance['portForwards'][number];

const VM1 = '0a1b2c3d-0000-4000-8000-000000000001';
const VM2 = '0a1b2c3d-0000-4000-8000-000000000002';

function forward(id: string, hostPort: number, targetAddress: string, targetPort: number, protocol: Forward['protocol'] = 'tcp'): Forward {
  return {
    id,
    protocol,
    hostAddress: null,
    hostPorts: { start: hostPort, end: hostPort },
    targetAddress,
    targetPorts: { start: targetPort, end: targetPort },
    sourceCidrs: [],
  };
}

function instance(id: string, v4: string, v6: string, portForwards: Forward[], rules: Instance['firewall']['rules'] = []): Instance {
  return {
    id,
    name: id.slice(-1),
    externalId: null,
    nics: [
      {
        id: `${id.slice(0, -1)}f`,
        name: 'eth0',
        mac: '02:00:00:00:00:01',
        network: 'br',
        addresses: [
          { address: v4, prefixLength: 24, delegated: false, gateway: '10.0.0.1', dns: [] },
          { address: v6, prefixLength: 64, delegated: false, gateway: 'fd00::1', dns: [] },
        ],
      },
    ],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules },
    bandwidth: [],
    portForwards,
  };
}

function state(revision: number, instances: Instance[]): DesiredState {
  return { apiVersion: 1, hostId: 'h', hostName: 'lab', revision, publicAddresses: ['198.51.100.1', '2001:db8:1::1'], instances };
}

const base = () => [
  instance(VM1, '10.0.0.5', 'fd00::5', [
    forward('f1000000-0000-4000-8000-000000000001', 10022, '10.0.0.5', 2222),
    forward('f6000000-0000-4000-8000-000000000001', 10022, 'fd00::5', 2222),
  ]),
  instance(VM2, '10.0.0.6', 'fd00::6', [forward('f1000000-0000-4000-8000-000000000002', 10023, '10.0.0.6', 2222, 'both')]),
];

describe.skipIf(!available && !REQUIRE_SYSTEM)('Dataplane', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  const vms: LabNamespace[] = [];
  const servers: LabServer[] = [];
  let dp: Dataplane;

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    await client.exec('ip', ['-6', 'addr', 'add', '2001:db8:1::2/64', 'dev', `${lab.prefix}a0`, 'nodad']);
    await host.exec('ip', ['-6', 'addr', 'add', '2001:db8:1::1/64', 'dev', `${lab.prefix}b0`, 'nodad']);
    // both instances behind one bridge in the host namespace
    await host.exec('ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await host.exec('ip', ['addr', 'add', '10.0.0.1/24', 'dev', 'br0']);
    await host.exec('ip', ['-6', 'addr', 'add', 'fd00::1/64', 'dev', 'br0', 'nodad']);
    await host.exec('ip', ['link', 'set', 'br0', 'up']);
    for (const [i, suffix] of [5, 6].entries()) {
      const vm = await lab.namespace(`vm${i}`);
      vms.push(vm);
      const { ifA } = await lab.link(host, `169.254.9.${i + 1}/32`, vm, `10.0.0.${suffix}/24`);
      await host.exec('ip', ['addr', 'flush', 'dev', ifA]);
      await host.exec('ip', ['link', 'set', ifA, 'master', 'br0']);
      await vm.exec('ip', ['-6', 'addr', 'add', `fd00::${suffix}/64`, 'dev', `${lab.prefix}b${i + 1}`, 'nodad']);
      await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
      await vm.exec('ip', ['-6', 'route', 'add', 'default', 'via', 'fd00::1']);
      servers.push(tcpServer(vm, 2222, `vm${suffix}`), udpServer(vm, 2222, `udp-vm${suffix}`));
    }
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    await host.exec('sysctl', ['-w', 'net.ipv6.conf.all.forwarding=1']);
    dp = dataplane({ netns: host.name });
    expect(await eventually(() => tcpOutcome(host, '10.0.0.6', 2222))).toBe('got:vm6');
    expect(await eventually(() => tcpOutcome(host, 'fd00::5', 2222))).toBe('got:vm5');
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    for (const d of dataplanes) await d.close();
    await lab.cleanup();
  });

  it('applies the whole state once, carries IPv4 and IPv6 TCP and UDP, and reads back what was desired', async () => {
    const desired = state(1, base());
    const first = await dp.apply(desired);
    expect(first).toMatchObject({ changed: true, mode: 'replace' });
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    expect(await tcpOutcome(client, '2001:db8:1::1', 10022)).toBe('got:vm5');
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('got:vm6');
    expect(await udpOutcome(client, '198.51.100.1', 10023)).toBe('got:udp-vm6');
    const observed = await dp.observe();
    const expected = expectedObservation(desired);
    expect(diffObservation(expected, { ...observed, shaping: [] })).toEqual([]);
    expect(observed.firewalls.every((f) => f.unrecognized === 0)).toBe(true);
  });

  it('sends nothing when applied again, and a fresh process replaces the table (a change: it lists none of its elements)', async () => {
    expect(await dp.apply(state(2, base()))).toEqual({ changed: false, mode: 'unchanged', commands: 0 });
    const other = dataplane({ netns: host.name });
    expect(await other.apply(state(2, base()))).toMatchObject({ changed: true, mode: 'replace' });
    expect(await other.drift()).toEqual([]);
  });

  it('adds and removes one forward with a few element commands, however many exist', async () => {
    const many = base();
    for (let p = 0; p < 2000; p++) many[1]!.portForwards.push(forward(`f2000000-0000-4000-8000-${String(p).padStart(12, '0')}`, 20000 + p, '10.0.0.6', 2222));
    expect((await dp.apply(state(3, many))).mode).toBe('incremental');
    const more = structuredClone(many);
    more[0]!.portForwards.push(forward('f3000000-0000-4000-8000-000000000001', 10030, '10.0.0.5', 2222));
    const added = await dp.apply(state(4, more));
    // its elements of the two DNAT maps and of the counter set (no named counter: see render.ts)
    expect(added).toEqual({ changed: true, mode: 'incremental', commands: 3 });
    expect(await tcpOutcome(client, '198.51.100.1', 10030)).toBe('got:vm5');
    expect(await tcpOutcome(client, '198.51.100.1', 21999)).toBe('got:vm6');
    const removed = await dp.apply(state(5, many));
    expect(removed).toEqual({ changed: true, mode: 'incremental', commands: 3 });
    expect(await tcpOutcome(client, '198.51.100.1', 10030)).toBe('refused');
    expect(await dp.drift()).toEqual([]);
  });

  it('changes one firewall by refilling only its chain', async () => {
    const rules: Instance['firewall']['rules'] = [
      {
        id: 'r1',
        direction: 'inbound',
        protocol: 'tcp',
        sourceCidr: '203.0.113.0/24',
        destinationCidr: null,
        ports: [{ start: 2222, end: 2222 }],
        action: 'allow',
        priority: 1,
      },
      {
        id: 'r2',
        direction: 'inbound',
        protocol: 'tcp',
        sourceCidr: null,
        destinationCidr: null,
        ports: [{ start: 2222, end: 2222 }],
        action: 'reject',
        priority: 2,
      },
    ];
    await dp.apply(state(6, base()));
    const next = base();
    next[0] = instance(VM1, '10.0.0.5', 'fd00::5', next[0]!.portForwards, rules);
    const result = await dp.apply(state(7, next));
    expect(result.mode).toBe('incremental');
    expect(result.commands).toBeLessThan(10);
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('refused');
    expect(await tcpOutcome(client, '2001:db8:1::1', 10022)).toBe('refused');
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('got:vm6');
    expect(diffObservation(expectedObservation(state(7, next)), { ...(await dp.observe()), shaping: [] })).toEqual([]);
    await dp.apply(state(8, base()));
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
  });

  it('detects a flushed ruleset, a deleted rule and a foreign element, and repairs each', async () => {
    const desired = state(8, base());
    await dp.apply(desired);
    expect(await dp.drift()).toEqual([]);

    await host.exec('nft', ['flush', 'ruleset']);
    expect(await dp.drift({ elements: false })).toEqual(['table inet gatehouse is missing']);
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('refused');
    expect(await dp.apply(desired, { force: true })).toMatchObject({ changed: true, mode: 'replace' });
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');

    const listing = (await listTable(TABLE.family, TABLE.table, { netns: host.name }))!;
    const dnat = listing.find((o) => (o.rule as { chain?: string } | undefined)?.chain === 'prerouting') as { rule: { handle: number } };
    await host.exec('nft', ['delete', 'rule', 'inet', 'gatehouse', 'prerouting', 'handle', String(dnat.rule.handle)]);
    expect((await dp.drift({ elements: false }))!.join()).toMatch(/chain prerouting has 1 rules differing from the 2 applied/);

    await dp.apply(desired, { force: true });
    await host.exec('nft', ['add', 'element', 'inet', 'gatehouse', 'fwd4_port', '{ 198.51.100.1 . tcp . 9999 : 22 }']);
    expect(await dp.drift({ elements: false })).toEqual([]);
    expect(await dp.drift()).toEqual(['map fwd4_port elements differ']);
    await dp.apply(desired, { force: true });
    expect(await dp.drift()).toEqual([]);
  });

  it('spells the rules of a replaced table in a scratch table it removes, and a fresh process replaces a table with a foreign element', async () => {
    const desired = state(8, base());
    const tables = async () => (await host.exec('nft', ['list', 'tables'])).trim().split('\n');
    await host.exec('nft', ['flush', 'ruleset']);
    expect(await dp.apply(desired, { force: true })).toMatchObject({ changed: true, mode: 'replace' });
    expect(await tables()).toEqual(['table inet gatehouse']);
    // the rules as the scratch table spelled them are the real table's: drift compares them rule by rule
    expect(await dp.drift()).toEqual([]);
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');

    // a fresh process (an agent start) over a table with a foreign element
    await host.exec('nft', ['add', 'element', 'inet', 'gatehouse', 'fwd4_port', '{ 198.51.100.1 . tcp . 9999 : 22 }']);
    const fresh = dataplane({ netns: host.name });
    expect(await fresh.apply(desired)).toMatchObject({ changed: true, mode: 'replace' });
    expect(await fresh.drift()).toEqual([]);
    expect(await tables()).toEqual(['table inet gatehouse']);
    await dp.apply(desired, { force: true });
  });

  it('counts packets per forward and per instance', async () => {
    await dp.apply(state(9, base()), { force: true });
    for (let i = 0; i < 3; i++) expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    const counters = await dp.counters();
    const fwd = counters.forwards.get('f1000000-0000-4000-8000-000000000001')!;
    expect(fwd.packets).toBeGreaterThanOrEqual(9); // SYN, ACK, FIN/ACK... of three connections
    expect(counters.forwards.get('f1000000-0000-4000-8000-000000000002')!.packets).toBe(0);
    const vm1 = counters.instances.get(VM1)!;
    expect(vm1.in.packets).toBeGreaterThanOrEqual(9);
    expect(vm1.out.bytes).toBeGreaterThan(0);
    expect(counters.instances.get(VM2)!.in.packets).toBe(0);
    // a forward's counter sums its elements: the UDP datagram counts into the same `both` forward as TCP
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('got:vm6');
    const tcpOnly = (await dp.counters()).forwards.get('f1000000-0000-4000-8000-000000000002')!;
    expect(tcpOnly.packets).toBeGreaterThanOrEqual(3);
    expect(await udpOutcome(client, '198.51.100.1', 10023)).toBe('got:udp-vm6');
    expect((await dp.counters()).forwards.get('f1000000-0000-4000-8000-000000000002')!.packets).toBeGreaterThan(tcpOnly.packets);
    // replacing the table restarts every forward counter, under a new epoch (what the controller counts as a reset)
    const epoch = (await dp.counters()).forwardEpoch;
    expect(epoch).toMatch(/^t\d+\.\d+\.\d+$/);
    await dp.apply(state(9, base()), { force: true });
    const replaced = await dp.counters();
    expect(replaced.forwardEpoch).not.toBe(epoch);
    expect(replaced.forwards.get('f1000000-0000-4000-8000-000000000001')!.packets).toBe(0);
  });

  it('releases one instance (twice), and gc removes only orphans — also from a process that applied nothing', async () => {
    await dp.apply(state(10, base()), { force: true });
    expect(await dp.release(VM2)).toBe(true);
    expect(await dp.release(VM2)).toBe(false);
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('refused');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');

    await dp.apply(state(11, base()));
    const fresh = dataplane({ netns: host.name });
    expect(await fresh.gc([VM1, VM2])).toEqual([]);
    expect(await fresh.gc([VM1])).toEqual([VM2]);
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('refused');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    expect(await fresh.release(VM2)).toBe(false);
    const names = JSON.stringify(await listTable(TABLE.family, TABLE.table, { netns: host.name }));
    expect(names).not.toContain(VM2.replace(/-/g, ''));
    expect(names).toContain(VM1.replace(/-/g, ''));
  });

  it('without instance counters or firewalls no packet passes a forward chain; the first firewall rule brings it in incrementally', async () => {
    await dp.remove();
    // as the driver base keeps the table: no per-instance counters
    const lean = dataplane({ netns: host.name }, { instanceCounters: false });
    const chains = async () =>
      (await listTable(TABLE.family, TABLE.table, { netns: host.name }))!.flatMap((o) => ('chain' in o ? [(o.chain as { name: string }).name] : []));
    expect(await lean.apply(state(20, base()))).toMatchObject({ mode: 'replace' });
    expect(await chains()).not.toContain('forward');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    expect(await tcpOutcome(client, '2001:db8:1::1', 10022)).toBe('got:vm5');
    expect((await lean.counters()).forwards.get('f1000000-0000-4000-8000-000000000001')!.packets).toBeGreaterThanOrEqual(3);

    const rejecting = base();
    const rule: Instance['firewall']['rules'][number] = {
      id: 'r1',
      direction: 'inbound',
      protocol: 'tcp',
      sourceCidr: null,
      destinationCidr: null,
      ports: [{ start: 2222, end: 2222 }],
      action: 'reject',
      priority: 1,
    };
    rejecting[0] = instance(VM1, '10.0.0.5', 'fd00::5', rejecting[0]!.portForwards, [rule]);
    expect(await lean.apply(state(21, rejecting))).toMatchObject({ changed: true, mode: 'incremental' });
    expect(await chains()).toContain('forward');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('refused');
    expect(await tcpOutcome(client, '2001:db8:1::1', 10022)).toBe('refused');
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('got:vm6');
    expect(diffObservation(expectedObservation(state(21, rejecting)), { ...(await lean.observe()), shaping: [] })).toEqual([]);
    expect(await lean.drift()).toEqual([]);

    // an allow-only firewall refuses nothing: no dispatch, no forward chain, and the rule still reads back
    const allowing = base();
    allowing[0] = instance(VM1, '10.0.0.5', 'fd00::5', allowing[0]!.portForwards, [{ ...rule, action: 'allow' }]);
    expect(await lean.apply(state(22, allowing))).toMatchObject({ changed: true, mode: 'incremental' });
    expect(await chains()).not.toContain('forward');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    expect(diffObservation(expectedObservation(state(22, allowing)), { ...(await lean.observe()), shaping: [] })).toEqual([]);

    // a process that applied nothing still finds an instance's forwards without dispatch or counter entries
    const fresh = dataplane({ netns: host.name }, { instanceCounters: false });
    expect(await fresh.release(VM2)).toBe(true);
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('refused');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm5');
    // the table as the tests after this one expect it
    await dp.apply(state(23, base()), { force: true });
  });

  it('an empty state leaves nothing of ours and nothing foreign touched; remove deletes the table', async () => {
    await host.exec('nft', ['add', 'table', 'ip', 'admin']);
    await host.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; }']);
    expect(await dp.apply(state(12, []))).toMatchObject({ changed: true });
    expect(await dp.apply(state(13, []))).toMatchObject({ changed: false });
    expect(await dp.observe()).toEqual({ forwards: [], firewalls: [] });
    await dp.apply(state(14, base()));
    await dp.remove();
    await dp.remove();
    const ruleset = await run('nft', ['list', 'ruleset'], { netns: host.name });
    expect(ruleset).not.toContain('gatehouse');
    expect(ruleset).toContain('table ip admin');
  });
});
