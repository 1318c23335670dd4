/**
 * The driver conformance suite. One call, `driverConformance(name, makeHarness)`, generates a
 * vitest suite for any driver from its declared capabilities; the harness creates and destroys
 * real instances and carries real traffic. It checks what every driver owes Gatehouse:
 *
 * - a bad configuration is refused with `DriverConfigError` naming the field, and so is a
 *   malformed desired state (nothing changes on the host);
 * - apply, then observe, equals the desired state; a second apply reports no change;
 * - a forward carries TCP and UDP to the right instance and port, and a removed one stops;
 * - firewall allow / reject / drop behave as declared, in priority order;
 * - a shaped instance measures within ±10% of its rate in each direction (iperf3);
 * - with `portForwards.rateLimits`, a per-source limit lets rate × seconds + burst (±10 %) of a
 *   flood through and refuses the rest (counted, when the driver reports `rateLimited`);
 * - with `portForwards.multiTarget`, one public port spreads connections over two targets by
 *   weight (1:3, ±10 of 50/150), and with source affinity one client stays on one target;
 * - release succeeds twice; gc removes only orphans;
 * - an empty state leaves nothing of the driver's behind and nothing foreign touched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DriverConfigError } from '../errors.js';
import { diffObservation, expectedObservation } from '../observed.js';
import type { DesiredState } from '../desired-state.js';
import type { DriverContext, NetworkDriver } from '../driver.js';
import type { LabNamespace } from './lab.js';
import { eventually, tcpConnectRate, tcpOutcome, udpOutcome, type LabServer, type Outcome } from './traffic.js';

/** A NIC the kit asks the harness to give an instance (or that the driver creates from the desired state). */
export interface HarnessNic {
  name: string;
  mac: string;
  network: string;
  address: string;
  prefixLength: number;
  gateway: string;
}

/** A running instance made by the harness. */
export interface HarnessInstance {
  externalId: string;
  /** A TCP server on `port` answering `reply`. */
  tcpServer(port: number, reply: string): Promise<LabServer>;
  /** A UDP server on `port` answering `reply`. */
  udpServer(port: number, reply: string): Promise<LabServer>;
  /** An iperf3 server on `port`. */
  iperf3Server(port: number): Promise<LabServer>;
}

/** What the kit needs from a backend's test setup. */
export interface ConformanceHarness {
  /** Builds the driver under test from a configuration (the harness's default when undefined). */
  createDriver(config?: unknown): Promise<NetworkDriver>;
  /** Configurations the driver must refuse, and the path its DriverConfigError must name. */
  badConfigs: { config: unknown; path: string }[];
  /** The host's public addresses as the client reaches them. */
  publicAddresses: { v4: string; v6?: string };
  /** A namespace outside the host that the traffic comes from. */
  client: LabNamespace;
  /** The network NICs join, and the IPv4 subnet instances take addresses from (`10.77.0.` + n, /24, gateway .1). */
  network: { name: string; v4Prefix: string; gateway: string };
  /** Creates a running instance with these NICs. */
  createInstance(name: string, nics: HarnessNic[]): Promise<HarnessInstance>;
  /** Destroys it; succeeds when already gone. */
  destroyInstance(externalId: string): Promise<void>;
  /** A fingerprint of state on the host that is not the driver's (other tables, interfaces); must not change. */
  foreignFingerprint(): Promise<string>;
  /** Removes everything the harness made. */
  cleanup(): Promise<void>;
}

type Instance = DesiredState['instances'][number];
type Rule = Instance['firewall']['rules'][number];

const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Generates the suite. `skip`: the machine cannot run it (the harness is not even created). */
export function driverConformance(name: string, makeHarness: () => Promise<ConformanceHarness>, options: { skip?: boolean } = {}): void {
  describe.skipIf(options.skip ?? false)(`${name}: driver conformance`, () => {
    let h: ConformanceHarness;
    let driver: NetworkDriver;
    const servers: LabServer[] = [];
    const ids = { a: '00000000-0000-4000-8000-0000000000a1', b: '00000000-0000-4000-8000-0000000000b1' };
    let instances: { a: HarnessInstance; b: HarnessInstance };
    let revision = 0;
    const ctx = (): DriverContext => ({
      logger: silentLogger,
      signal: new AbortController().signal,
      host: { id: 'conformance-host', name: 'conformance', publicAddresses: publicAddresses() },
    });
    const publicAddresses = () => [h.publicAddresses.v4, ...(h.publicAddresses.v6 && driver.capabilities.portForwards?.ipv6 ? [h.publicAddresses.v6] : [])];
    const nic = (key: 'a' | 'b'): HarnessNic => ({
      name: 'eth0',
      mac: key === 'a' ? '02:47:48:00:00:0a' : '02:47:48:00:00:0b',
      network: h.network.name,
      address: `${h.network.v4Prefix}${key === 'a' ? 10 : 11}`,
      prefixLength: 24,
      gateway: h.network.gateway,
    });
    const instance = (key: 'a' | 'b', extra: Partial<Pick<Instance, 'portForwards' | 'firewall' | 'bandwidth'>> = {}): Instance => {
      const n = nic(key);
      return {
        id: ids[key],
        name: `conf-${key}`,
        externalId: instances[key].externalId,
        nics: [
          {
            id: `${ids[key].slice(0, -2)}c${key === 'a' ? 1 : 2}`,
            name: n.name,
            mac: n.mac,
            network: n.network,
            addresses: [{ address: n.address, prefixLength: n.prefixLength, delegated: false, gateway: n.gateway, dns: [] }],
          },
        ],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
        bandwidth: [],
        portForwards: [],
        ...extra,
      };
    };
    const state = (list: Instance[]): DesiredState => ({
      apiVersion: 1,
      hostId: 'conformance-host',
      hostName: 'conformance',
      revision: ++revision,
      publicAddresses: publicAddresses(),
      instances: list,
    });
    const forward = (id: string, protocol: 'tcp' | 'udp' | 'both', hostPort: number, key: 'a' | 'b', targetPort: number, span = 0) => ({
      id,
      protocol,
      hostAddress: null,
      hostPorts: { start: hostPort, end: hostPort + span },
      targetAddress: nic(key).address,
      targetPorts: { start: targetPort, end: targetPort + span },
      sourceCidrs: [],
    });
    // forwards only for drivers that declare them: one carrying TCP and UDP where both are declared
    const udp = () => driver.capabilities.portForwards?.protocols.includes('udp') ?? false;
    const standard = () =>
      driver.capabilities.portForwards
        ? [
            instance('a', {
              portForwards: [
                forward('00000000-0000-4000-8000-00000000f0a1', udp() ? 'both' : 'tcp', 18080, 'a', 8080),
                forward('00000000-0000-4000-8000-00000000f0a2', 'tcp', 18100, 'a', 8100, 1),
              ],
            }),
            instance('b', { portForwards: [forward('00000000-0000-4000-8000-00000000f0b1', 'tcp', 18081, 'b', 8080)] }),
          ]
        : [instance('a'), instance('b')];
    const tcp = (port: number): Promise<Outcome> => tcpOutcome(h.client, h.publicAddresses.v4, port);

    beforeAll(async () => {
      h = await makeHarness();
      driver = await h.createDriver();
      instances = { a: await h.createInstance('conf-a', [nic('a')]), b: await h.createInstance('conf-b', [nic('b')]) };
      for (const [key, inst] of Object.entries(instances)) {
        servers.push(
          await inst.tcpServer(8080, `tcp-${key}-8080`),
          await inst.udpServer(8080, `udp-${key}-8080`),
          await inst.tcpServer(8100, `tcp-${key}-8100`),
          await inst.tcpServer(8101, `tcp-${key}-8101`),
          await inst.iperf3Server(5201),
        );
      }
    }, 120_000);
    afterAll(async () => {
      for (const s of servers) s.stop();
      try {
        await driver?.apply(ctx(), { desired: state([]) });
        await driver?.close?.();
      } finally {
        await h?.cleanup();
      }
    }, 120_000);

    it('refuses a bad configuration with DriverConfigError naming the field', async () => {
      expect(h.badConfigs.length).toBeGreaterThan(0);
      for (const bad of h.badConfigs) {
        const err = await h.createDriver(bad.config).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, JSON.stringify(bad.config)).toBeInstanceOf(DriverConfigError);
        expect((err as DriverConfigError).path).toBe(bad.path);
        expect((err as DriverConfigError).code).toBe('DRIVER_CONFIG_INVALID');
      }
    });

    it('refuses a malformed desired state, naming the field, and changes nothing', async () => {
      const before = await driver.observe(ctx(), {});
      const fingerprint = await h.foreignFingerprint();
      const bad = state(standard()) as unknown as { instances: { portForwards: { hostPorts: { end: number } }[] }[] };
      bad.instances[0]!.portForwards[0]!.hostPorts.end = 70000;
      const err = await driver.apply(ctx(), { desired: bad as unknown as DesiredState }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DriverConfigError);
      expect((err as DriverConfigError).path).toBe('input.desired.instances[0].portForwards[0].hostPorts.end');
      expect(await driver.observe(ctx(), {})).toEqual(before);
      expect(await h.foreignFingerprint()).toBe(fingerprint);
    });

    it('applies a desired state that observe then reports exactly; a second apply changes nothing', async () => {
      const desired = state(standard());
      const first = await driver.apply(ctx(), { desired });
      expect(first.changed).toBe(true);
      expect(first.objects.filter((o) => o.status !== 'applied')).toEqual([]);
      const observed = await driver.observe(ctx(), { desired });
      expect(diffObservation(expectedObservation(desired), observed.state)).toEqual([]);
      const second = await driver.apply(ctx(), { desired: state(standard()) });
      expect(second.changed).toBe(false);
    });

    it('carries TCP and UDP through a forward to the right instance and port, and a removed forward stops', async (t) => {
      if (!driver.capabilities.portForwards) return t.skip();
      await driver.apply(ctx(), { desired: state(standard()) });
      expect(await eventually(() => tcp(18080))).toBe('got:tcp-a-8080');
      expect(await tcp(18081)).toBe('got:tcp-b-8080');
      expect(await tcp(18101)).toBe('got:tcp-a-8101');
      if (udp()) expect(await udpOutcome(h.client, h.publicAddresses.v4, 18080)).toBe('got:udp-a-8080');
      const [a, b] = standard();
      await driver.apply(ctx(), { desired: state([{ ...a!, portForwards: a!.portForwards.slice(1) }, b!]) });
      expect(await tcp(18080)).not.toMatch(/^got:/);
      expect(await udpOutcome(h.client, h.publicAddresses.v4, 18080)).not.toMatch(/^got:/);
      expect(await tcp(18081)).toBe('got:tcp-b-8080');
    });

    it('applies firewall rules in priority order: allow, reject and drop', async (t) => {
      if (!driver.capabilities.firewall) return t.skip();
      const rule = (id: string, priority: number, port: number, action: Rule['action']): Rule => ({
        id: `00000000-0000-4000-8000-0000000001${id}`,
        direction: 'inbound',
        protocol: 'tcp',
        sourceCidr: null,
        destinationCidr: null,
        ports: [{ start: port, end: port }],
        action,
        priority,
      });
      const [a, b] = standard();
      const withRules = (rules: Rule[], inboundPolicy: Rule['action'] = 'allow') =>
        driver.apply(ctx(), { desired: state([{ ...a!, firewall: { inboundPolicy, outboundPolicy: 'allow', rules } }, b!]) });
      await withRules([rule('01', 10, 8100, 'reject'), rule('02', 20, 8080, 'drop')]);
      expect(await tcp(18100)).toBe('refused');
      expect(await tcp(18080)).toBe('timeout');
      expect(await tcp(18081)).toBe('got:tcp-b-8080');
      // a lower priority number is evaluated first
      await withRules([rule('03', 5, 8100, 'allow'), rule('01', 10, 8100, 'reject')], 'drop');
      expect(await tcp(18100)).toBe('got:tcp-a-8100');
      expect(await tcp(18101)).toBe('timeout');
      await withRules([]);
      expect(await tcp(18101)).toBe('got:tcp-a-8101');
    });

    it('shapes an instance within ±10% of its rate in each direction (iperf3)', async (t) => {
      const shaping = driver.capabilities.shaping;
      if (!shaping) return t.skip();
      const [a, b] = standard();
      const ingressBps = 20_000_000;
      const egressBps = 40_000_000;
      const limit = {
        id: '00000000-0000-4000-8000-0000000000d1',
        nicId: null,
        ingressBps: shaping.ingress ? ingressBps : null,
        egressBps: shaping.egress ? egressBps : null,
        ingressBurstBytes: null,
        egressBurstBytes: null,
        monthlyQuotaBytes: null,
        quotaAction: null,
        throttleBps: null,
      };
      const desired = state([
        { ...a!, portForwards: [...a!.portForwards, forward('00000000-0000-4000-8000-00000000f0a3', 'tcp', 15201, 'a', 5201)], bandwidth: [limit] },
        b!,
      ]);
      const result = await driver.apply(ctx(), { desired });
      expect(result.objects.filter((o) => o.status !== 'applied')).toEqual([]);
      expect(diffObservation(expectedObservation(desired), (await driver.observe(ctx(), { desired })).state)).toEqual([]);
      for (const [direction, rate] of [
        ['ingress', limit.ingressBps],
        ['egress', limit.egressBps],
      ] as const) {
        if (rate === null) continue;
        const measured = await iperf3(h.client, h.publicAddresses.v4, 15201, direction === 'egress');
        console.log(
          `[conformance ${name}] ${direction} limit ${rate} bit/s, measured ${Math.round(measured)} bit/s (${((measured / rate - 1) * 100).toFixed(1)}%)`,
        );
        expect(Math.abs(measured / rate - 1)).toBeLessThanOrEqual(0.1);
      }
    }, 60_000);

    it('limits new connections per source as declared (rateLimits): ~rate × seconds + burst through, the excess refused and counted', async (t) => {
      if (!driver.capabilities.portForwards?.rateLimits) return t.skip();
      const [a, b] = standard();
      const limit = { perSource: 20, total: null, burst: 4, action: 'reject' as const };
      const limited = { ...forward('00000000-0000-4000-8000-00000000f0a4', 'tcp', 18090, 'a', 8080), rateLimit: limit };
      const desired = state([{ ...a!, portForwards: [...a!.portForwards, limited] }, b!]);
      const result = await driver.apply(ctx(), { desired });
      expect(result.objects.filter((o) => o.status !== 'applied')).toEqual([]);
      expect(diffObservation(expectedObservation(desired), (await driver.observe(ctx(), { desired })).state)).toEqual([]);
      const flood = await tcpConnectRate(h.client, h.publicAddresses.v4, 18090, { rate: 200, seconds: 3 });
      const through = flood.counts['got:tcp-a-8080'] ?? 0;
      const expected = limit.perSource * flood.seconds + limit.burst;
      console.log(
        `[conformance ${name}] rate limit 20/s per source: ${through} of 600 through in ${flood.seconds} s (expected ${expected.toFixed(0)}): ${JSON.stringify(flood.counts)}`,
      );
      expect(Math.abs(through - expected) / expected).toBeLessThanOrEqual(0.1);
      expect(flood.counts.refused).toBe(600 - through);
      // a driver that counts what its limits refused reports it with the forward's counter
      const counted = (await driver.stats(ctx(), { desired, parts: ['forwards'] })).forwards.find((f) => f.forwardId === limited.id);
      if (counted?.rateLimited !== undefined) expect(Math.abs(counted.rateLimited - (600 - through))).toBeLessThanOrEqual(limit.burst);
      // another forward is not limited
      expect(await tcp(18081)).toBe('got:tcp-b-8080');
    }, 60_000);

    it('balances one public port over several targets by weight, and keeps a client on one target with affinity (multiTarget)', async (t) => {
      if (!driver.capabilities.portForwards?.multiTarget) return t.skip();
      const [a, b] = standard();
      const balanced = (affinity: boolean) => ({
        ...forward('00000000-0000-4000-8000-00000000f0a5', 'tcp', 18095, 'a', 8080),
        balance: {
          sourceAffinity: affinity,
          targets: [
            { instanceId: ids.a, address: nic('a').address, weight: 1 },
            { instanceId: ids.b, address: nic('b').address, weight: 3 },
          ],
        },
      });
      for (const affinity of [false, true]) {
        const desired = state([{ ...a!, portForwards: [...a!.portForwards, balanced(affinity)] }, b!]);
        const result = await driver.apply(ctx(), { desired });
        expect(result.objects.filter((o) => o.status !== 'applied')).toEqual([]);
        expect(diffObservation(expectedObservation(desired), (await driver.observe(ctx(), { desired })).state)).toEqual([]);
        const spread = (await tcpConnectRate(h.client, h.publicAddresses.v4, 18095, { rate: 100, seconds: 2, timeoutMs: 2000 })).counts;
        console.log(`[conformance ${name}] 200 connections over targets weighted 1:3${affinity ? ' with source affinity' : ''}: ${JSON.stringify(spread)}`);
        if (affinity) {
          // one client, one target
          expect(Object.values(spread)).toEqual([200]);
          expect(Object.keys(spread)[0]).toMatch(/^got:tcp-[ab]-8080$/);
        } else {
          expect(Math.abs((spread['got:tcp-a-8080'] ?? 0) - 50)).toBeLessThanOrEqual(10);
          expect(Math.abs((spread['got:tcp-b-8080'] ?? 0) - 150)).toBeLessThanOrEqual(10);
        }
      }
    }, 60_000);

    it('releases an instance twice, and gc removes only orphans', async () => {
      await driver.apply(ctx(), { desired: state(standard()) });
      expect(await eventually(() => tcp(18081))).toBe('got:tcp-b-8080');
      await driver.release(ctx(), { instanceId: ids.b });
      await driver.release(ctx(), { instanceId: ids.b });
      expect(await tcp(18081)).not.toMatch(/^got:/);
      expect(await tcp(18080)).toBe('got:tcp-a-8080');

      const restored = await driver.apply(ctx(), { desired: state(standard()) });
      expect(restored.objects.filter((o) => o.status !== 'applied')).toEqual([]);
      expect(await eventually(() => tcp(18081))).toBe('got:tcp-b-8080');
      await driver.gc(ctx(), { validInstanceIds: [ids.a, ids.b] });
      expect(await tcp(18081)).toBe('got:tcp-b-8080');
      await driver.gc(ctx(), { validInstanceIds: [ids.a] });
      expect(await tcp(18081)).not.toMatch(/^got:/);
      expect(await tcp(18080)).toBe('got:tcp-a-8080');
    });

    it('leaves nothing of its own behind on an empty state, and nothing foreign touched', async () => {
      const fingerprint = await h.foreignFingerprint();
      await driver.apply(ctx(), { desired: state(standard()) });
      const emptied = await driver.apply(ctx(), { desired: state([]) });
      expect(emptied.objects).toEqual([]);
      expect((await driver.observe(ctx(), {})).state).toEqual({ forwards: [], firewalls: [], shaping: [] });
      expect(await tcp(18080)).not.toMatch(/^got:/);
      expect(await h.foreignFingerprint()).toBe(fingerprint);
      expect((await driver.apply(ctx(), { desired: state([]) })).changed).toBe(false);
    });
  });
}

/**
 * Bits per second received in a 4 s iperf3 run through host:port (`reverse`: the instance sends).
 * A run whose report has no receive total (iperf3 printed `error`, or ended the test early: seen
 * once in a fresh-clone run at load 6) is run again once; a second such report fails naming it.
 */
async function iperf3(client: LabNamespace, host: string, port: number, reverse: boolean): Promise<number> {
  const args = ['-c', host, '-p', String(port), '-t', '4', '-O', '1', '-J', ...(reverse ? ['-R'] : [])];
  let last = '';
  for (let attempt = 1; attempt <= 2; attempt++) {
    const out = await client.exec('iperf3', args, { timeoutMs: 30_000 });
    const report = JSON.parse(out) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
    const bps = report.end?.sum_received?.bits_per_second;
    if (typeof bps === 'number') return bps;
    last = report.error ?? `no end.sum_received in ${out.slice(0, 300)}`;
    if (attempt === 1) await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  throw new Error(`iperf3 ${args.join(' ')}: ${last}`);
}
