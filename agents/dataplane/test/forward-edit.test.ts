/**
 * Editing a forward in place (the controller's `updatePortForward`) as the dataplane sees it: a
 * new version of the forward under the same id. The edit must be one nft transaction — the
 * element's old value deleted and its new value added in the same batch, the allow-list chain
 * flushed and refilled in it — so that there is no instant where neither the old nor the new rule
 * answers. Checked on the commands and with real traffic: clients connecting in a loop through
 * the forward while it is edited over and over get no refused connection and no timeout.
 */
import { NetnsLab, eventually, labAvailable, tcpConnectLoop, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARD, oneForwardState as state, type Forward } from './support/one-forward.js';
import { Dataplane, incrementalChange } from '../src/dataplane.js';
import { renderRuleset } from '../src/render.js';
import { contentOfCommands } from '../src/table.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

/** The commands an incremental apply sends to take the table from one version of the forward to another. */
function editCommands(from: Forward, to: Forward): Record<string, any>[] {
  const before = state(1, from);
  const after = state(2, to);
  const frame = (s: ReturnType<typeof state>) => contentOfCommands(renderRuleset(s, { forwardElements: false }));
  return incrementalChange({ state: before, content: frame(before) }, after, frame(after))!;
}

it('turns a target port edit into one delete and one add of the same map element, in one command list', () => {
  const commands = editCommands(FORWARD, { ...FORWARD, targetPorts: { start: 2223, end: 2223 } });
  const key = { concat: ['198.51.100.1', 6, 10022] };
  expect(commands).toEqual([
    { delete: { element: { family: 'inet', table: 'gatehouse', name: 'fwd4_port', elem: [key] } } },
    { add: { element: { family: 'inet', table: 'gatehouse', name: 'fwd4_port', elem: [[key, 2223]] } } },
  ]);
});

it('turns a host port edit into element deletions and additions in one command list, deletions first', () => {
  const commands = editCommands(FORWARD, { ...FORWARD, hostPorts: { start: 10023, end: 10023 } });
  const kinds = commands.map((c) => `${Object.keys(c)[0]} ${c[Object.keys(c)[0]!].element.name}`);
  expect(kinds).toEqual(['delete fwd4_addr', 'delete fwd4_port', 'delete fwd4_ctr', 'add fwd4_addr', 'add fwd4_port', 'add fwd4_ctr']);
});

it('turns an allow-list edit into a flush and refill of the allow-list chain only, and a note-only edit into nothing', () => {
  for (const [from, to] of [
    [[], ['198.51.100.0/24']],
    [['198.51.100.0/24'], ['198.51.100.2/32', '203.0.113.0/24']],
    [['198.51.100.0/24'], []],
  ]) {
    const commands = editCommands({ ...FORWARD, sourceCidrs: from! }, { ...FORWARD, sourceCidrs: to! });
    expect(commands[0]).toEqual({ flush: { chain: { family: 'inet', table: 'gatehouse', name: 'fwd_sources' } } });
    // the counter rule, then the allow-list rule (none when anyone may connect)
    expect(commands.slice(1).map((c) => c.add?.rule?.chain)).toEqual(to!.length > 0 ? ['fwd_sources', 'fwd_sources'] : ['fwd_sources']);
  }
  // the note is not part of the table (the desired state does not even carry it)
  expect(editCommands(FORWARD, { ...FORWARD })).toEqual([]);
});

describe.skipIf(!available && !REQUIRE_SYSTEM)('forward edits under traffic', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  const servers: LabServer[] = [];
  let dp: Dataplane;

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    await lab.link(host, '10.0.0.1/24', vm, '10.0.0.5/24');
    await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    servers.push(tcpServer(vm, 2222, 'old'), tcpServer(vm, 2223, 'new'));
    expect(await eventually(() => tcpOutcome(host, '10.0.0.5', 2223))).toBe('got:new');
    dp = new Dataplane({ netns: host.name });
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    await dp?.close();
    await lab.cleanup();
  });

  it('refuses no connection while the target port and the allow-list are edited 40 times under a client loop', async () => {
    let revision = 1;
    expect((await dp.apply(state(revision, FORWARD))).mode).toBe('replace');
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 10022))).toBe('got:old');
    const versions: Forward[] = [
      { ...FORWARD, targetPorts: { start: 2223, end: 2223 } },
      { ...FORWARD, targetPorts: { start: 2223, end: 2223 }, sourceCidrs: ['198.51.100.0/24'] },
      { ...FORWARD, targetPorts: { start: 2222, end: 2222 }, sourceCidrs: ['198.51.100.2/32', '203.0.113.0/24'] },
      { ...FORWARD, targetPorts: { start: 2222, end: 2222 }, sourceCidrs: [] },
    ];
    const loop = tcpConnectLoop(client, '198.51.100.1', 10022, 4);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const modes = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const result = await dp.apply(state(++revision, versions[i % versions.length]!));
        modes.add(result.mode);
        await new Promise((r) => setTimeout(r, 25));
      }
      await new Promise((r) => setTimeout(r, 300));
      const counts = await loop.stop();
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      console.log(`forward edits under traffic: 40 edits, ${total} connections: ${JSON.stringify(counts)}`);
      expect(modes).toEqual(new Set(['incremental']));
      expect(counts.refused ?? 0).toBe(0);
      expect(counts.timeout ?? 0).toBe(0);
      expect(Object.keys(counts).filter((k) => k.startsWith('error:'))).toEqual([]);
      // both versions answered, and the loop ran through the edits
      expect(counts['got:old']).toBeGreaterThan(0);
      expect(counts['got:new']).toBeGreaterThan(0);
      expect(total).toBeGreaterThan(200);
    } finally {
      loop.kill();
    }
  });

  it('moves a forward to another host port: the new port answers, the old one is free', async () => {
    await dp.apply(state(100, FORWARD));
    const result = await dp.apply(state(101, { ...FORWARD, hostPorts: { start: 10023, end: 10023 }, targetPorts: { start: 2223, end: 2223 } }));
    expect(result).toMatchObject({ mode: 'incremental', commands: 6 });
    expect(await tcpOutcome(client, '198.51.100.1', 10023)).toBe('got:new');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('refused');
    expect(await dp.drift()).toEqual([]);
  });
});
