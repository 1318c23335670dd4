/**
 * Bandwidth shaping with tc, measured with real traffic: a "host" namespace and an "instance"
 * namespace joined by a veth pair, shaping on the host-side end, iperf3 in both directions.
 */
import { CommandError } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ShapingConfigError,
  SHAPING_TAGS,
  applyShaping,
  defaultBurstBytes,
  ifbName,
  readShaping,
  removeShaping,
  shapingMatches,
  shapingStats,
  type ShapingSpec,
} from '../src/tc.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const spec = (s: Partial<ShapingSpec>): ShapingSpec => ({ ingressBps: null, egressBps: null, ingressBurstBytes: null, egressBurstBytes: null, ...s });

it('names the ifb device of an interface deterministically, recognisably and within 15 characters', () => {
  expect(ifbName('gh1a2b3ca0')).toBe(ifbName('gh1a2b3ca0'));
  expect(ifbName('gh1a2b3ca0')).not.toBe(ifbName('gh1a2b3ca1'));
  for (const name of ['a', 'tap0', 'verylongname123']) expect(ifbName(name)).toMatch(/^ghifb[0-9a-f]{10}$/);
});

it('defaults the burst to 10 ms at the rate, at least 15,000 bytes, and compares within tc rounding', () => {
  expect(defaultBurstBytes(1_000_000)).toBe(15_000);
  expect(defaultBurstBytes(20_000_000)).toBe(25_000);
  expect(defaultBurstBytes(100_000_000_000)).toBe(125_000_000);
  // tc keeps 12345678 bit/s as 1543209 bytes/s and prints it as 12345Kbit
  expect(shapingMatches(spec({ ingressBps: 12_345_678 }), spec({ ingressBps: 12_345_000, ingressBurstBytes: 15_432 }))).toBe(true);
  expect(shapingMatches(spec({ ingressBps: 12_345_678 }), spec({ ingressBps: 12_000_000, ingressBurstBytes: 15_432 }))).toBe(false);
  expect(shapingMatches(spec({ egressBps: 1_000_000 }), null)).toBe(false);
  expect(shapingMatches(null, spec({}))).toBe(true);
});

describe.skipIf(!available && !REQUIRE_SYSTEM)('shaping on a host-side veth, measured with iperf3', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let vm: LabNamespace;
  let hostIf: string;
  const servers: ChildProcess[] = [];
  const rates: Record<string, number> = {};

  /** What the receiver counted, in bits per second, over `seconds` after an omitted first second. */
  async function measure(from: LabNamespace, server: string, seconds = 5): Promise<number> {
    const out = await from.exec('iperf3', ['-c', server, '-t', String(seconds), '-O', '1', '-J'], { timeoutMs: (seconds + 20) * 1000 });
    return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
  }
  /** Into the instance: client in the host namespace, server in the instance. */
  const measureIngress = (seconds?: number) => measure(host, '10.9.0.2', seconds);
  /** From the instance: client in the instance namespace, server in the host. */
  const measureEgress = (seconds?: number) => measure(vm, '10.9.0.1', seconds);

  const inHost = {
    get netns() {
      return host.name;
    },
  };
  const qdiscs = async (dev: string) => host.exec('tc', ['-j', 'qdisc', 'show', 'dev', dev]);
  const linkExists = (dev: string) =>
    host.exec('ip', ['link', 'show', 'dev', dev]).then(
      () => true,
      (err: unknown) => (err instanceof CommandError ? false : Promise.reject(err)),
    );

  function startServer(ns: LabNamespace, address: string): void {
    servers.push(spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-B', address], { stdio: 'ignore' }));
  }
  async function waitListening(ns: LabNamespace): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if ((await ns.exec('ss', ['-Hltn', 'sport', '=', ':5201'])).trim() !== '') return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`iperf3 server in ${ns.name} did not start`);
  }

  beforeAll(async () => {
    host = await lab.namespace('host');
    vm = await lab.namespace('vm');
    ({ ifA: hostIf } = await lab.link(host, '10.9.0.1/24', vm, '10.9.0.2/24'));
    startServer(vm, '10.9.0.2');
    startServer(host, '10.9.0.1');
    await waitListening(vm);
    await waitListening(host);
  });
  afterAll(async () => {
    for (const s of servers) {
      if (s.exitCode === null && s.signalCode === null) {
        const exited = new Promise((r) => s.once('exit', r));
        s.kill('SIGTERM');
        await exited;
      }
    }
    await lab.cleanup();
    console.log(`measured rates (bits/s): ${JSON.stringify(rates)}`);
  });

  it('limits traffic into the instance to 20 Mbit/s with an htb root qdisc on the host-side interface', async () => {
    expect(await applyShaping({ iface: hostIf, spec: spec({ ingressBps: 20_000_000 }) }, inHost)).toEqual({ changed: true });
    expect(JSON.parse(await qdiscs(hostIf))).toContainEqual(expect.objectContaining({ kind: 'htb', handle: `${SHAPING_TAGS.ingressMajor}:`, root: true }));
    rates.ingress20M = await measureIngress();
    console.log(`ingress limited to 20 Mbit/s: measured ${(rates.ingress20M / 1e6).toFixed(2)} Mbit/s`);
    expect(rates.ingress20M).toBeGreaterThan(18_000_000);
    expect(rates.ingress20M).toBeLessThan(22_000_000);
  });

  it('limits traffic from the instance to 50 Mbit/s through an ifb device in the same namespace', async () => {
    expect(await applyShaping({ iface: hostIf, spec: spec({ ingressBps: 20_000_000, egressBps: 50_000_000 }) }, inHost)).toEqual({ changed: true });
    expect(await linkExists(ifbName(hostIf))).toBe(true);
    rates.egress50M = await measureEgress();
    console.log(`egress limited to 50 Mbit/s: measured ${(rates.egress50M / 1e6).toFixed(2)} Mbit/s`);
    expect(rates.egress50M).toBeGreaterThan(45_000_000);
    expect(rates.egress50M).toBeLessThan(55_000_000);
  });

  it('counts the bytes that went through each direction', async () => {
    const stats = await shapingStats(hostIf, inHost);
    console.log(`class statistics after traffic: ${JSON.stringify(stats)}`);
    // 5 s at the limit (plus the omitted second) is at least ~12 MB into and ~31 MB out of the instance
    expect(stats.ingress?.bytes).toBeGreaterThan(10_000_000);
    expect(stats.ingress?.packets).toBeGreaterThan(1_000);
    expect(stats.egress?.bytes).toBeGreaterThan(25_000_000);
    expect(stats.egress?.drops).toBeGreaterThanOrEqual(0);
  });

  it('applies the same spec again without changing anything, and reads back what was applied', async () => {
    const applied = spec({ ingressBps: 20_000_000, egressBps: 50_000_000 });
    const before = [await qdiscs(hostIf), await qdiscs(ifbName(hostIf)), await host.exec('ip', ['-j', 'link', 'show', 'dev', ifbName(hostIf)])];
    expect(await applyShaping({ iface: hostIf, spec: applied }, inHost)).toEqual({ changed: false });
    expect([await qdiscs(hostIf), await qdiscs(ifbName(hostIf)), await host.exec('ip', ['-j', 'link', 'show', 'dev', ifbName(hostIf)])]).toEqual(before);
    expect(await readShaping(hostIf, inHost)).toEqual({ ingressBps: 20_000_000, egressBps: 50_000_000, ingressBurstBytes: 25_000, egressBurstBytes: 62_500 });
    expect(shapingMatches(applied, await readShaping(hostIf, inHost))).toBe(true);
    // an odd rate that tc rounds still reads back as equal, and an explicit burst is kept
    const odd = spec({ ingressBps: 20_000_000, egressBps: 49_999_999, egressBurstBytes: 70_001 });
    expect(await applyShaping({ iface: hostIf, spec: odd }, inHost)).toEqual({ changed: true });
    expect(await applyShaping({ iface: hostIf, spec: odd }, inHost)).toEqual({ changed: false });
    expect(shapingMatches(odd, await readShaping(hostIf, inHost))).toBe(true);
  });

  it('changes a rate in place (one class change, no teardown) and the new rate takes effect', async () => {
    const statsBefore = await shapingStats(hostIf, inHost);
    const ifindex = await host.exec('ip', ['-j', 'link', 'show', 'dev', ifbName(hostIf)]);
    expect(await applyShaping({ iface: hostIf, spec: spec({ ingressBps: 10_000_000, egressBps: 49_999_999, egressBurstBytes: 70_001 }) }, inHost)).toEqual({
      changed: true,
    });
    // the egress side was not rebuilt: same ifb device, its class counters kept
    expect(await host.exec('ip', ['-j', 'link', 'show', 'dev', ifbName(hostIf)])).toBe(ifindex);
    // neither side was rebuilt: the counters of both classes carry on
    const statsAfter = await shapingStats(hostIf, inHost);
    expect(statsAfter.egress?.bytes).toBeGreaterThanOrEqual(statsBefore.egress?.bytes ?? Infinity);
    expect(statsAfter.ingress?.bytes).toBeGreaterThanOrEqual(statsBefore.ingress?.bytes ?? Infinity);
    expect((await readShaping(hostIf, inHost))?.ingressBps).toBe(10_000_000);
    rates.ingress10M = await measureIngress();
    console.log(`ingress changed to 10 Mbit/s: measured ${(rates.ingress10M / 1e6).toFixed(2)} Mbit/s`);
    expect(rates.ingress10M).toBeGreaterThan(9_000_000);
    expect(rates.ingress10M).toBeLessThan(11_000_000);
  });

  it('refuses bad input with ShapingConfigError naming the field and the value, and changes nothing', async () => {
    const state = async () => [await qdiscs(hostIf), await qdiscs(ifbName(hostIf)), await host.exec('tc', ['class', 'show', 'dev', hostIf])];
    const before = await state();
    const bad: [Partial<ShapingSpec> | string, string, string][] = [
      [{ ingressBps: 0 }, 'spec.ingressBps', '0'],
      [{ egressBps: -5 }, 'spec.egressBps', '-5'],
      [{ ingressBps: 1.5e6 + 0.5 }, 'spec.ingressBps', '1500000.5'],
      [{ egressBps: Number.NaN }, 'spec.egressBps', 'NaN'],
      [{ egressBps: Number.POSITIVE_INFINITY }, 'spec.egressBps', 'Infinity'],
      [{ ingressBps: 100_000_000_001 }, 'spec.ingressBps', '100000000001'],
      [{ egressBps: '1000000' as unknown as number }, 'spec.egressBps', '"1000000"'],
      [{ ingressBps: 10_000_000, ingressBurstBytes: 100 }, 'spec.ingressBurstBytes', '100'],
      [{ egressBps: 10_000_000, egressBurstBytes: 2 ** 32 }, 'spec.egressBurstBytes', '4294967296'],
      [{ ingressBps: 8_000, ingressBurstBytes: 1_000_000 }, 'spec.ingressBurstBytes', '1000000'],
      [{ egressBurstBytes: 20_000 }, 'spec.egressBurstBytes', '20000'],
      ['an-interface-name-too-long', 'iface', '"an-interface-name-too-long"'],
    ];
    for (const [input, path, shown] of bad) {
      const call =
        typeof input === 'string'
          ? applyShaping({ iface: input, spec: spec({ ingressBps: 1_000_000 }) }, inHost)
          : applyShaping({ iface: hostIf, spec: spec({ ingressBps: 1_000_000, ...input }) }, inHost);
      const err = await call.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, path).toBeInstanceOf(ShapingConfigError);
      expect((err as ShapingConfigError).path).toBe(path);
      expect((err as ShapingConfigError).code).toBe('DRIVER_CONFIG_INVALID');
      expect((err as ShapingConfigError).message.startsWith(`${path} `)).toBe(true);
      expect((err as ShapingConfigError).message).toContain(`(got ${shown})`);
    }
    expect(await state()).toEqual(before);
  });

  it('removes only its own objects, twice, and afterwards the rate is far above the limit', async () => {
    // foreign objects: an htb root with handle 1: on another device (an ifb: this kernel has no dummy), another ifb, a filter beside ours on our interface's ingress hook
    const foreignDev = `${lab.prefix}f0`;
    const foreignIfb = `${lab.prefix}x`;
    await host.exec('ip', ['link', 'add', foreignDev, 'type', 'ifb']);
    await host.exec('tc', ['qdisc', 'add', 'dev', foreignDev, 'root', 'handle', '1:', 'htb', 'default', '1']);
    await host.exec('ip', ['link', 'add', foreignIfb, 'type', 'ifb']);
    const foreignFilter = ['dev', hostIf, 'ingress', 'pref', '100', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '192.0.2.1/32'];
    await host.exec('tc', ['filter', 'add', ...foreignFilter, 'action', 'mirred', 'egress', 'mirror', 'dev', foreignIfb]);
    const foreignBefore = await qdiscs(foreignDev);

    await removeShaping(hostIf, inHost);
    await removeShaping(hostIf, inHost);
    expect(await readShaping(hostIf, inHost)).toBeNull();
    expect(await shapingStats(hostIf, inHost)).toEqual({ ingress: null, egress: null });
    expect(await linkExists(ifbName(hostIf))).toBe(false);
    const left = JSON.parse(await qdiscs(hostIf)) as { kind: string; handle: string }[];
    expect(left.map((q) => q.handle)).not.toContain(`${SHAPING_TAGS.ingressMajor}:`);
    // the ingress qdisc still holds the foreign filter, so it stays
    expect(left).toContainEqual(expect.objectContaining({ kind: 'ingress' }));
    const filters = JSON.parse(await host.exec('tc', ['-j', 'filter', 'show', 'dev', hostIf, 'ingress'])) as { pref: number }[];
    expect(filters.map((f) => f.pref)).toContain(100);
    expect(filters.map((f) => f.pref)).not.toContain(SHAPING_TAGS.filterPref);
    expect(await qdiscs(foreignDev)).toBe(foreignBefore);
    expect(await linkExists(foreignIfb)).toBe(true);
    expect(await applyShaping({ iface: hostIf, spec: null }, inHost)).toEqual({ changed: false });

    rates.ingressUnshaped = await measureIngress(2);
    rates.egressUnshaped = await measureEgress(2);
    console.log(
      `after removal: into the instance ${(rates.ingressUnshaped / 1e6).toFixed(0)} Mbit/s, from it ${(rates.egressUnshaped / 1e6).toFixed(0)} Mbit/s`,
    );
    expect(rates.ingressUnshaped).toBeGreaterThan(5 * 20_000_000);
    expect(rates.egressUnshaped).toBeGreaterThan(5 * 50_000_000);
  });

  it('leaves a foreign root qdisc alone unless the spec shapes that direction, and removes the ifb after the interface is gone', async () => {
    const { ifA } = await lab.link(host, '10.9.1.1/24', vm, '10.9.1.2/24');
    await host.exec('tc', ['qdisc', 'add', 'dev', ifA, 'root', 'handle', '5:', 'pfifo']);
    const rootOf = async () => (JSON.parse(await qdiscs(ifA)) as { root?: boolean; kind: string; handle: string }[]).find((q) => q.root);
    expect(await applyShaping({ iface: ifA, spec: spec({ egressBps: 5_000_000 }) }, inHost)).toEqual({ changed: true });
    expect(await rootOf()).toMatchObject({ kind: 'pfifo', handle: '5:' });
    expect(await readShaping(ifA, inHost)).toEqual(spec({ egressBps: 5_000_000, egressBurstBytes: 15_000 }));
    await removeShaping(ifA, inHost);
    expect(await rootOf()).toMatchObject({ kind: 'pfifo', handle: '5:' });
    expect(await linkExists(ifbName(ifA))).toBe(false);
    // the ingress qdisc held only our filter: it went with it
    expect((JSON.parse(await qdiscs(ifA)) as { kind: string }[]).map((q) => q.kind)).toEqual(['pfifo']);
    // a device squatting the ifb name that is not an ifb: refused before anything changes, the device left alone
    await host.exec('ip', ['link', 'add', ifbName(ifA), 'type', 'veth', 'peer', 'name', `${lab.prefix}p`]);
    const refused = await applyShaping({ iface: ifA, spec: spec({ ingressBps: 5_000_000, egressBps: 5_000_000 }) }, inHost).catch((e: unknown) => e);
    expect(refused).toMatchObject({ name: 'ConflictError', code: 'CONFLICT' });
    expect(await rootOf()).toMatchObject({ kind: 'pfifo', handle: '5:' });
    await removeShaping(ifA, inHost);
    expect(await linkExists(ifbName(ifA))).toBe(true);
    await host.exec('ip', ['link', 'del', ifbName(ifA)]);
    // the interface disappears with its instance: removal still deletes the ifb, and succeeds again
    await applyShaping({ iface: ifA, spec: spec({ egressBps: 5_000_000 }) }, inHost);
    await host.exec('ip', ['link', 'del', ifA]);
    await removeShaping(ifA, inHost);
    await removeShaping(ifA, inHost);
    expect(await linkExists(ifbName(ifA))).toBe(false);
    // shaping an interface that is not there (yet) is worth retrying later
    const missing = await applyShaping({ iface: ifA, spec: spec({ egressBps: 5_000_000 }) }, inHost).catch((e: unknown) => e);
    expect(missing).toMatchObject({ name: 'TransientError', code: 'TRANSIENT', retryable: true });
  });
});
