/**
 * The example plugin (examples/json-file-plugin.ts), loaded the way the agent loads a plugin
 * (`loadDriver`), held to the contract: apply then observe equals `expectedObservation(desired)`,
 * a second apply changes nothing, an empty state leaves nothing, unsupported objects fail one by
 * one, a malformed state or configuration is refused naming the field, foreign state is never
 * touched, release and gc are safe to repeat, and a plugin for another API version is refused.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import {
  ConflictError,
  DriverConfigError,
  DriverIncompatibleError,
  diffObservation,
  expectedObservation,
  loadDriver,
  type DesiredInstance,
  type DesiredState,
  type DriverContext,
  type NetworkDriver,
} from '../src/index.js';

const EXAMPLE = pathToFileURL(join(import.meta.dirname, '../examples/json-file-plugin.ts')).href;
const dir = mkdtempSync(join(tmpdir(), 'gatehouse-example-plugin-'));
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx: DriverContext = { logger: silent, signal: new AbortController().signal, host: { id: 'h1', name: 'h1', publicAddresses: ['198.51.100.1'] } };

const A = '00000000-0000-4000-8000-0000000000a1';
const B = '00000000-0000-4000-8000-0000000000b1';

function instance(id: string, address: string, extra: Partial<DesiredInstance> = {}): DesiredInstance {
  return {
    id,
    name: `vm-${id.slice(-2)}`,
    externalId: null,
    nics: [{ id: `${id.slice(0, -2)}c1`, name: 'eth0', mac: `02:00:00:00:00:${id.slice(-2)}`, network: 'br0', addresses: [] }],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [],
    ...extra,
  };
}

let revision = 0;
let files = 0;
function state(instances: DesiredInstance[]): DesiredState {
  return { apiVersion: 1, hostId: 'h1', hostName: 'h1', revision: ++revision, publicAddresses: ['198.51.100.1', '2001:db8::1'], instances };
}

/** Two instances: forwards over both protocols, a port range, IPv6 and an allow-list; firewall rules in order. */
const standard = () => [
  instance(A, '10.0.0.10', {
    portForwards: [
      {
        id: 'f-a1',
        protocol: 'both',
        hostAddress: null,
        hostPorts: { start: 10022, end: 10022 },
        targetAddress: '10.0.0.10',
        targetPorts: { start: 22, end: 22 },
        sourceCidrs: [],
      },
      {
        id: 'f-a2',
        protocol: 'tcp',
        hostAddress: null,
        hostPorts: { start: 18100, end: 18102 },
        targetAddress: '10.0.0.10',
        targetPorts: { start: 8100, end: 8102 },
        sourceCidrs: ['203.0.113.0/24'],
      },
      {
        id: 'f-a3',
        protocol: 'tcp',
        hostAddress: '2001:db8::1',
        hostPorts: { start: 443, end: 443 },
        targetAddress: 'fd00::10',
        targetPorts: { start: 8443, end: 8443 },
        sourceCidrs: [],
      },
    ],
    firewall: {
      inboundPolicy: 'drop',
      outboundPolicy: 'allow',
      rules: [
        {
          id: 'r-1',
          direction: 'inbound',
          protocol: 'tcp',
          sourceCidr: null,
          destinationCidr: null,
          ports: [{ start: 22, end: 22 }],
          action: 'allow',
          priority: 10,
        },
        { id: 'r-2', direction: 'inbound', protocol: 'icmp', sourceCidr: '203.0.113.0/24', destinationCidr: null, ports: [], action: 'reject', priority: 20 },
      ],
    },
  }),
  instance(B, '10.0.0.11', {
    portForwards: [
      {
        id: 'f-b1',
        protocol: 'udp',
        hostAddress: '198.51.100.1',
        hostPorts: { start: 15353, end: 15353 },
        targetAddress: '10.0.0.11',
        targetPorts: { start: 53, end: 53 },
        sourceCidrs: [],
      },
    ],
  }),
];

const rejection = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (err: unknown) => err,
  );

describe('example plugin: json-file', () => {
  let path: string;
  let driver: NetworkDriver;

  beforeEach(async () => {
    path = join(dir, `state-${++files}.json`);
    driver = await loadDriver(EXAMPLE, { path }, ctx);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads through loadDriver with its id, API version and capabilities', () => {
    expect(driver.id).toBe('json-file');
    expect(driver.apiVersion).toBe(1);
    expect(driver.capabilities.shaping).toBeNull();
    expect(driver.capabilities.portForwards?.protocols).toEqual(['tcp', 'udp']);
  });

  it('applies a desired state that observe then reports exactly; a second apply changes nothing', async () => {
    const desired = state(standard());
    const first = await driver.apply(ctx, { desired });
    expect(first.changed).toBe(true);
    expect(first.objects.filter((o) => o.status !== 'applied')).toEqual([]);
    expect(first.objects.map((o) => `${o.objectType} ${o.objectId}`).sort()).toEqual(
      [
        `nic ${A.slice(0, -2)}c1`,
        `nic ${B.slice(0, -2)}c1`,
        'port_forward f-a1',
        'port_forward f-a2',
        'port_forward f-a3',
        'port_forward f-b1',
        'firewall_rule r-1',
        'firewall_rule r-2',
      ].sort(),
    );
    const observed = (await driver.observe(ctx, { desired })).state;
    expect(observed).toEqual(expectedObservation(desired));
    // both protocols, three ports of the range, the IPv6 forward only on the IPv6 address
    expect(observed.forwards).toHaveLength(2 + 3 + 1 + 1);
    expect(observed.forwards.find((f) => f.hostPort === 443)).toMatchObject({ hostAddress: '2001:db8::1', targetAddress: 'fd00::10' });

    const written = readFileSync(path, 'utf8');
    const second = await driver.apply(ctx, { desired: state(standard()) });
    expect(second.changed).toBe(false);
    expect(second.objects).toEqual(first.objects);
    expect((await driver.apply(ctx, { desired: state(standard()), repair: true })).changed).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe(written);
  });

  it('removes what a new state no longer has', async () => {
    await driver.apply(ctx, { desired: state(standard()) });
    const [a] = standard();
    const smaller = state([{ ...a!, portForwards: a!.portForwards.slice(1) }]);
    expect((await driver.apply(ctx, { desired: smaller })).changed).toBe(true);
    expect((await driver.observe(ctx, {})).state).toEqual(expectedObservation(smaller));
  });

  it('leaves nothing behind on an empty state', async () => {
    await driver.apply(ctx, { desired: state(standard()) });
    const emptied = await driver.apply(ctx, { desired: state([]) });
    expect(emptied).toEqual({ changed: true, objects: [] });
    expect(existsSync(path)).toBe(false);
    expect((await driver.observe(ctx, {})).state).toEqual({ forwards: [], firewalls: [], shaping: [] });
    expect((await driver.apply(ctx, { desired: state([]) })).changed).toBe(false);
  });

  it('fails a bandwidth limit with CAPABILITY_NOT_SUPPORTED and still applies the rest', async () => {
    const [a, b] = standard();
    const limit = {
      id: 'bw-1',
      nicId: null,
      ingressBps: 10_000_000,
      egressBps: null,
      ingressBurstBytes: null,
      egressBurstBytes: null,
      monthlyQuotaBytes: null,
      quotaAction: null,
      throttleBps: null,
    };
    const desired = state([{ ...a!, bandwidth: [limit] }, b!]);
    const result = await driver.apply(ctx, { desired });
    const failed = result.objects.filter((o) => o.status === 'failed');
    expect(failed).toEqual([
      { objectType: 'bandwidth_limit', objectId: 'bw-1', status: 'failed', error: expect.objectContaining({ code: 'CAPABILITY_NOT_SUPPORTED' }) },
    ]);
    expect(result.objects.filter((o) => o.objectType === 'port_forward').every((o) => o.status === 'applied')).toBe(true);
    // the unsupported limit is not drift the agent would try to repair forever
    expect((await driver.drift!(ctx, { desired, thorough: true })).differences).toEqual([]);
  });

  it('reports drift when the file is changed behind its back, and the next apply repairs it', async () => {
    const desired = state(standard());
    await driver.apply(ctx, { desired });
    const content = JSON.parse(readFileSync(path, 'utf8')) as { instances: Record<string, { forwards: unknown[] }> };
    content.instances[B]!.forwards = [];
    writeFileSync(path, JSON.stringify(content));
    const { differences } = await driver.drift!(ctx, { desired, thorough: false });
    expect(differences).toEqual(['forward udp 198.51.100.1:15353: expected → 10.0.0.11:53, found nothing']);
    expect(diffObservation(expectedObservation(desired), (await driver.observe(ctx, { desired })).state)).toEqual(differences);
    expect((await driver.apply(ctx, { desired, repair: true })).changed).toBe(true);
    expect((await driver.drift!(ctx, { desired, thorough: true })).differences).toEqual([]);
  });

  it('refuses a malformed desired state naming the field, and changes nothing', async () => {
    await driver.apply(ctx, { desired: state(standard()) });
    const before = readFileSync(path, 'utf8');
    const bad = state(standard());
    bad.instances[0]!.portForwards[0]!.hostPorts.end = 70000;
    const err = await rejection(driver.apply(ctx, { desired: bad }));
    expect(err).toBeInstanceOf(DriverConfigError);
    expect((err as DriverConfigError).path).toBe('input.desired.instances[0].portForwards[0].hostPorts.end');
    expect(readFileSync(path, 'utf8')).toBe(before);
  });

  it('never overwrites a file Gatehouse did not write', async () => {
    writeFileSync(path, '{"backends": []}\n');
    const err = await rejection(driver.apply(ctx, { desired: state(standard()) }));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).retryable).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe('{"backends": []}\n');
  });

  it('releases an instance twice, and gc removes only orphans', async () => {
    const desired = state(standard());
    await driver.apply(ctx, { desired });
    expect(await driver.release(ctx, { instanceId: B })).toEqual({ released: true });
    expect(await driver.release(ctx, { instanceId: B })).toEqual({ released: false });
    expect((await driver.observe(ctx, {})).state).toEqual(expectedObservation(state([standard()[0]!])));

    await driver.apply(ctx, { desired: state(standard()) });
    expect(await driver.gc(ctx, { validInstanceIds: [A, B] })).toEqual({ removedInstanceIds: [] });
    expect(await driver.gc(ctx, { validInstanceIds: [A] })).toEqual({ removedInstanceIds: [B] });
    expect((await driver.observe(ctx, {})).state).toEqual(expectedObservation(state([standard()[0]!])));
    expect(await driver.gc(ctx, { validInstanceIds: [] })).toEqual({ removedInstanceIds: [A] });
    expect(existsSync(path)).toBe(false);
  });

  it('refuses a bad configuration with DriverConfigError naming the field', async () => {
    for (const [config, field] of [
      [undefined, 'config'],
      ['/tmp/x.json', 'config'],
      [{}, 'config.path'],
      [{ path: 'relative.json' }, 'config.path'],
      [{ path: join(dir, 'x.yaml') }, 'config.path'],
      [{ path: join(dir, 'x.json'), indent: 2 }, 'config.indent'],
    ] as const) {
      const err = await rejection(loadDriver(EXAMPLE, config, ctx));
      expect(err, JSON.stringify(config)).toBeInstanceOf(DriverConfigError);
      expect((err as DriverConfigError).path).toBe(field);
      expect((err as DriverConfigError).toJSON()).toMatchObject({ code: 'DRIVER_CONFIG_INVALID', path: field });
    }
  });

  it('refuses a plugin built for another driver API version, before creating its driver', async () => {
    const future = join(dir, 'future-plugin.mjs');
    writeFileSync(future, `export default { id: 'future', apiVersion: 2, createDriver() { throw new Error('must not be called'); } };\n`);
    const err = await rejection(loadDriver(pathToFileURL(future).href, {}, ctx));
    expect(err).toBeInstanceOf(DriverIncompatibleError);
    expect((err as DriverIncompatibleError).code).toBe('DRIVER_INCOMPATIBLE');
    expect((err as Error).message).toBe('plugin future was built for driver API version 2; this agent supports 1');
  });
});
