/**
 * The contract tier of the conformance kit: what every driver owes Gatehouse that can be checked
 * through the contract alone, without root, namespaces or traffic. It runs anywhere a driver's
 * backend runs (for a driver whose backend needs root, where that is). The checks, in the spirit
 * of Terraform's "re-plan after apply must be empty" and CNI's DEL/GC rules:
 *
 * - apply says it changed something, a second apply of the same state says it did not, and
 *   `observe` then equals `expectedObservation(desired)`;
 * - an empty desired state removes everything the driver made, and applying it again changes nothing;
 * - release succeeds twice (and for an instance never seen), and takes only that instance;
 * - gc with every valid id removes nothing; gc with fewer removes only the others, and never
 *   foreign state;
 * - discover returns well-formed instances.
 *
 * `runContractTier(harness)` runs the checks and returns one result each (for a driver's own
 * tests, and to prove a check can fail); `contractSuite(name, makeHarness)` makes them a vitest
 * suite. The desired states use only what the driver's capabilities declare.
 */
import { describe, it } from 'vitest';
import type { DesiredInstance, DesiredPortForward, DesiredState } from '../desired-state.js';
import type { DriverCapabilities, DriverContext, NetworkDriver } from '../driver.js';
import { diffObservation, expectedObservation } from '../observed.js';

/** What the contract tier needs from a driver's test setup. */
export interface ContractHarness {
  /** Builds a fresh driver under test. */
  createDriver(): Promise<NetworkDriver>;
  /** The external ids of two instances the driver can apply to (default null: the driver needs none). */
  externalIds?: { a: string | null; b: string | null };
  /** The host's public addresses (default `198.51.100.1`, and `2001:db8::1` where IPv6 forwards are declared). */
  publicAddresses?: string[];
  /** The network the instances' NICs are on, and their IPv4 subnet (default `gatehouse-contract`, `10.77.0.` + n, gateway .1). */
  network?: { name: string; v4Prefix: string; gateway: string };
  /** A fingerprint of state on the host that is not the driver's (files, tables, interfaces); must never change. */
  foreignFingerprint(): Promise<string>;
  /** Removes everything the harness made. */
  cleanup?(): Promise<void>;
}

/** One check's outcome. */
export interface ContractResult {
  check: string;
  passed: boolean;
  /** Why it failed. */
  error?: string;
}

/** The checks' names, in the order they run. */
export const CONTRACT_CHECKS = [
  'applies idempotently: a second apply changes nothing and observe equals the desired state',
  'an empty desired state removes everything, and nothing foreign',
  'release succeeds twice and takes only that instance',
  'gc removes only instances not in the valid ids, and nothing foreign',
  'discover returns well-formed instances',
] as const;

/** A failed check. */
class ContractViolation extends Error {}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new ContractViolation(message);
}

const IDS = { a: '00000000-0000-4000-8000-0000000000a1', b: '00000000-0000-4000-8000-0000000000b1' } as const;
const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Builds the desired states of the checks from what the driver declares. */
class StateBuilder {
  private revision = 0;

  constructor(
    private readonly capabilities: DriverCapabilities,
    private readonly harness: ContractHarness,
  ) {}

  get publicAddresses(): string[] {
    return this.harness.publicAddresses ?? ['198.51.100.1', ...(this.capabilities.portForwards?.ipv6 ? ['2001:db8::1'] : [])];
  }

  state(instances: DesiredInstance[]): DesiredState {
    return { apiVersion: 1, hostId: 'contract-host', hostName: 'contract', revision: ++this.revision, publicAddresses: this.publicAddresses, instances };
  }

  /** Two instances with every kind of forward, firewall rule and limit the driver declares. */
  standard(): DesiredInstance[] {
    return [this.instance('a', 10), this.instance('b', 11)];
  }

  private instance(key: 'a' | 'b', host: number): DesiredInstance {
    const network = this.harness.network ?? { name: 'gatehouse-contract', v4Prefix: '10.77.0.', gateway: '10.77.0.1' };
    const id = IDS[key];
    const v4 = `${network.v4Prefix}${host}`;
    const forwards = this.capabilities.portForwards;
    const v6 = forwards?.ipv6 ? `fd00:77::${host}` : null;
    // object ids: the instance's, with its key, a kind letter and a number in the last four digits
    const oid = (kind: string, n: number) => `${id.slice(0, -4)}${key}${kind}${n.toString(16).padStart(2, '0')}`;
    const nicId = oid('c', 1);
    const forward = (n: number, extra: Partial<DesiredPortForward>): DesiredPortForward => ({
      id: oid('f', n),
      protocol: 'tcp',
      hostAddress: null,
      hostPorts: { start: 18000 + host * 10 + n, end: 18000 + host * 10 + n },
      targetAddress: v4,
      targetPorts: { start: 8080, end: 8080 },
      sourceCidrs: [],
      ...extra,
    });
    const portForwards: DesiredPortForward[] = [];
    if (forwards) {
      portForwards.push(forward(1, { protocol: forwards.protocols.includes('udp') ? (forwards.protocols.includes('tcp') ? 'both' : 'udp') : 'tcp' }));
      if (forwards.portRanges)
        portForwards.push(forward(2, { hostPorts: { start: 18500 + host * 10, end: 18502 + host * 10 }, targetPorts: { start: 8100, end: 8102 } }));
      if (forwards.sourceAllowLists) portForwards.push(forward(3, { sourceCidrs: ['203.0.113.0/24'] }));
      if (forwards.rateLimits) portForwards.push(forward(5, { rateLimit: { perSource: 50, total: 1000, burst: 10, action: 'drop' } }));
      if (forwards.multiTarget) {
        // balanced over both instances: weighted turns on one, source affinity on the other
        const other = key === 'a' ? 'b' : 'a';
        const targets = [
          { instanceId: id, address: v4, weight: 2 },
          { instanceId: IDS[other], address: `${network.v4Prefix}${key === 'a' ? 11 : 10}`, weight: 1 },
        ];
        portForwards.push(forward(6, { balance: { targets, sourceAffinity: key === 'b' } }));
      }
      if (v6) portForwards.push(forward(4, { targetAddress: v6, hostAddress: this.publicAddresses.find((a) => a.includes(':')) ?? null }));
    }
    const firewall = this.capabilities.firewall;
    const rules: DesiredInstance['firewall']['rules'] = [];
    if (firewall) {
      // one rule per declared action and direction, and ICMP; the document lists rules in evaluation
      // order (direction, then priority)
      let n = 0;
      if (firewall.icmp && firewall.directions.includes('inbound'))
        rules.push({
          id: oid('e', 0),
          direction: 'inbound',
          protocol: 'icmp',
          sourceCidr: null,
          destinationCidr: null,
          ports: [],
          action: firewall.actions[0]!,
          priority: 1,
        });
      for (const direction of [...firewall.directions].sort()) {
        for (const action of firewall.actions) {
          n++;
          rules.push({
            id: oid('e', n),
            direction,
            protocol: 'tcp',
            sourceCidr: direction === 'inbound' ? '192.0.2.0/24' : null,
            destinationCidr: direction === 'outbound' ? '198.51.100.0/24' : null,
            ports: [{ start: 9000 + n, end: 9000 + n }],
            action,
            priority: firewall.priorities ? 10 * n : 100,
          });
        }
      }
    }
    const shaping = this.capabilities.shaping;
    const bandwidth: DesiredInstance['bandwidth'] = shaping
      ? [
          {
            id: oid('d', 1),
            nicId: null,
            ingressBps: shaping.ingress ? 20_000_000 : null,
            egressBps: shaping.egress ? 40_000_000 : null,
            ingressBurstBytes: null,
            egressBurstBytes: null,
            monthlyQuotaBytes: null,
            quotaAction: null,
            throttleBps: null,
          },
        ]
      : [];
    return {
      id,
      name: `contract-${key}`,
      externalId: this.harness.externalIds?.[key] ?? null,
      nics: [
        {
          id: nicId,
          name: 'eth0',
          mac: key === 'a' ? '02:47:48:00:00:0a' : '02:47:48:00:00:0b',
          network: network.name,
          addresses: [
            { address: v4, prefixLength: 24, delegated: false, gateway: network.gateway, dns: [] },
            ...(v6 ? [{ address: v6, prefixLength: 64, delegated: false, gateway: null, dns: [] }] : []),
          ],
        },
      ],
      firewall: { inboundPolicy: firewall?.actions.includes('drop') ? 'drop' : 'allow', outboundPolicy: 'allow', rules },
      bandwidth,
      portForwards,
    };
  }
}

/** What one check gets. */
interface CheckContext {
  driver: NetworkDriver;
  harness: ContractHarness;
  states: StateBuilder;
  ctx: DriverContext;
}

/** Says how `observe` differs from what `desired` should look like, or nothing. */
async function expectObserved(c: CheckContext, desired: DesiredState, when: string): Promise<void> {
  const observed = await c.driver.observe(c.ctx, { desired });
  const differences = diffObservation(expectedObservation(desired), observed.state);
  check(differences.length === 0, `${when}, observe differs from expectedObservation(desired): ${differences.slice(0, 5).join('; ')}`);
}

async function applyAll(c: CheckContext, desired: DesiredState, when: string) {
  const result = await c.driver.apply(c.ctx, { desired });
  const failed = result.objects.filter((o) => o.status !== 'applied');
  check(
    failed.length === 0,
    `${when}, ${failed.length} object(s) failed: ${failed
      .slice(0, 3)
      .map((o) => `${o.objectType} ${o.objectId}: ${o.error?.message}`)
      .join('; ')}`,
  );
  return result;
}

const CHECKS: Record<(typeof CONTRACT_CHECKS)[number], (c: CheckContext) => Promise<void>> = {
  [CONTRACT_CHECKS[0]]: async (c) => {
    await c.driver.apply(c.ctx, { desired: c.states.state([]) });
    const desired = c.states.state(c.states.standard());
    const first = await applyAll(c, desired, 'after the first apply');
    check(first.changed, 'the first apply onto an empty host said changed: false');
    const objects = desired.instances.flatMap((i) => [...i.nics, ...i.portForwards, ...i.firewall.rules, ...i.bandwidth].map((o) => o.id));
    const reported = new Set(first.objects.map((o) => o.objectId));
    const missing = objects.filter((id) => !reported.has(id));
    check(missing.length === 0, `apply reported no result for ${missing.join(', ')}`);
    await expectObserved(c, desired, 'after the first apply');
    const second = await applyAll(c, c.states.state(c.states.standard()), 'after a second apply of the same state');
    check(!second.changed, 'a second apply of the same state said changed: true');
    await expectObserved(c, desired, 'after a second apply of the same state');
  },

  [CONTRACT_CHECKS[1]]: async (c) => {
    const fingerprint = await c.harness.foreignFingerprint();
    await applyAll(c, c.states.state(c.states.standard()), 'after applying the standard state');
    const emptied = await c.driver.apply(c.ctx, { desired: c.states.state([]) });
    check(emptied.objects.length === 0, `an empty state reported ${emptied.objects.length} object result(s)`);
    check(emptied.changed, 'removing everything said changed: false');
    const observed = (await c.driver.observe(c.ctx, {})).state;
    const left = observed.forwards.length + observed.firewalls.length + observed.shaping.length;
    check(left === 0, `after an empty state, observe still reports ${JSON.stringify(observed).slice(0, 300)}`);
    check(!(await c.driver.apply(c.ctx, { desired: c.states.state([]) })).changed, 'a second empty apply said changed: true');
    check((await c.harness.foreignFingerprint()) === fingerprint, "state that is not the driver's changed");
  },

  [CONTRACT_CHECKS[2]]: async (c) => {
    const [a] = c.states.standard();
    await applyAll(c, c.states.state(c.states.standard()), 'after applying the standard state');
    const first = await c.driver.release(c.ctx, { instanceId: IDS.b });
    check(typeof first.released === 'boolean', `release answered ${JSON.stringify(first)}`);
    await c.driver.release(c.ctx, { instanceId: IDS.b });
    await c.driver.release(c.ctx, { instanceId: '00000000-0000-4000-8000-0000000000ff' });
    await expectObserved(c, c.states.state([a!]), 'after releasing instance b twice');
  },

  [CONTRACT_CHECKS[3]]: async (c) => {
    const [a] = c.states.standard();
    const desired = c.states.state(c.states.standard());
    await applyAll(c, desired, 'after applying the standard state');
    const fingerprint = await c.harness.foreignFingerprint();
    const none = await c.driver.gc(c.ctx, { validInstanceIds: [IDS.a, IDS.b] });
    check(none.removedInstanceIds.length === 0, `gc with every valid id removed ${none.removedInstanceIds.join(', ')}`);
    await expectObserved(c, desired, 'after gc with every valid id');
    const some = await c.driver.gc(c.ctx, { validInstanceIds: [IDS.a] });
    check(some.removedInstanceIds.includes(IDS.b), `gc without instance b's id reported removing ${JSON.stringify(some.removedInstanceIds)}, not ${IDS.b}`);
    await expectObserved(c, c.states.state([a!]), 'after gc without instance b');
    check((await c.harness.foreignFingerprint()) === fingerprint, "gc changed state that is not the driver's");
  },

  [CONTRACT_CHECKS[4]]: async (c) => {
    const { instances } = await c.driver.discover(c.ctx, {});
    check(Array.isArray(instances), `discover returned ${JSON.stringify(instances)} as instances`);
    for (const [i, instance] of instances.entries()) {
      const at = `discover: instances[${i}]`;
      check(typeof instance.externalId === 'string' && instance.externalId !== '', `${at}.externalId is ${JSON.stringify(instance.externalId)}`);
      check(typeof instance.name === 'string', `${at}.name is ${JSON.stringify(instance.name)}`);
      check(typeof instance.running === 'boolean', `${at}.running is ${JSON.stringify(instance.running)}`);
      check(Array.isArray(instance.nics), `${at}.nics is not a list`);
      for (const [n, nic] of instance.nics.entries()) {
        check(typeof nic.name === 'string' && typeof nic.mac === 'string', `${at}.nics[${n}] has no name or MAC: ${JSON.stringify(nic)}`);
        check(
          Array.isArray(nic.addresses) && nic.addresses.every((a) => /^[0-9a-fA-F.:]+\/\d{1,3}$/.test(a)),
          `${at}.nics[${n}].addresses are not CIDRs: ${JSON.stringify(nic.addresses)}`,
        );
        check(
          nic.hostInterface === undefined || typeof nic.hostInterface === 'string',
          `${at}.nics[${n}].hostInterface is ${JSON.stringify(nic.hostInterface)}`,
        );
      }
    }
  },
};

/** Runs every check of the contract tier against a fresh driver, then applies an empty state; one result per check. */
export async function runContractTier(harness: ContractHarness): Promise<ContractResult[]> {
  const driver = await harness.createDriver();
  const c: CheckContext = {
    driver,
    harness,
    states: new StateBuilder(driver.capabilities, harness),
    ctx: { logger: silentLogger, signal: new AbortController().signal, host: { id: 'contract-host', name: 'contract', publicAddresses: [] } },
  };
  c.ctx.host.publicAddresses = c.states.publicAddresses;
  const results: ContractResult[] = [];
  try {
    for (const name of CONTRACT_CHECKS) results.push(await runCheck(name, c));
  } finally {
    await driver.apply(c.ctx, { desired: c.states.state([]) }).catch(() => undefined);
    await driver.close?.();
  }
  return results;
}

async function runCheck(name: (typeof CONTRACT_CHECKS)[number], c: CheckContext): Promise<ContractResult> {
  try {
    await CHECKS[name](c);
    return { check: name, passed: true };
  } catch (err) {
    return { check: name, passed: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Generates the contract tier as a vitest suite, one test per check (each reports the check's
 * failure message). `skip`: the machine cannot run it (the harness is not even created).
 */
export function contractSuite(name: string, makeHarness: () => Promise<ContractHarness>, options: { skip?: boolean } = {}): void {
  describe.skipIf(options.skip ?? false)(`${name}: driver contract`, () => {
    let results: Promise<ContractResult[]> | undefined;
    const run = () =>
      (results ??= makeHarness().then(async (harness) => {
        try {
          return await runContractTier(harness);
        } finally {
          await harness.cleanup?.();
        }
      }));
    for (const check of CONTRACT_CHECKS) {
      it(check, async () => {
        const result = (await run()).find((r) => r.check === check)!;
        if (!result.passed) throw new ContractViolation(result.error);
      });
    }
  });
}
