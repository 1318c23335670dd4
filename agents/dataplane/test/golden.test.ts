/**
 * Golden outputs of the pure functions that compute what is sent to `nft -j`, with no root and no
 * nft: the whole ruleset (`renderRuleset`) and the incremental commands an apply sends after a
 * change (`incrementalChange`), for representative desired states. The JSON lives in
 * `test/golden/`; a change to the rendering shows there as a diff to review (`vitest -u` rewrites
 * the files). The driver base's pure parts are checked beside them.
 */
import type { DesiredInstance, DesiredPortForward, DesiredState } from '@gatehouse/sdk';
import { describe, expect, it } from 'vitest';
import { incrementalChange } from '../src/dataplane.js';
import { DATAPLANE_CAPABILITIES, dataplaneCapabilities } from '../src/driver-base.js';
import { shapingFor } from '../src/nics.js';
import { renderRuleset, type RenderOptions } from '../src/render.js';
import { contentOfCommands } from '../src/table.js';

const A = '00000000-0000-4000-8000-0000000000a1';
const B = '00000000-0000-4000-8000-0000000000b1';

function state(instances: DesiredInstance[], publicAddresses = ['198.51.100.1', '2001:db8::1']): DesiredState {
  return { apiVersion: 1, hostId: 'golden-host', hostName: 'golden', revision: 1, publicAddresses, instances };
}

function instance(id: string, v4: string, v6: string | null, extra: Partial<DesiredInstance> = {}): DesiredInstance {
  return {
    id,
    name: `vm-${id.slice(-2)}`,
    externalId: null,
    nics: [
      {
        id: `${id.slice(0, -2)}c1`,
        name: 'eth0',
        mac: `02:00:00:00:00:${id.slice(-2)}`,
        network: 'br0',
        addresses: [
          { address: v4, prefixLength: 24, delegated: false, gateway: '10.0.0.1', dns: [] },
          ...(v6 ? [{ address: v6, prefixLength: 64, delegated: false, gateway: 'fd00::1', dns: [] }] : []),
        ],
      },
    ],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [],
    ...extra,
  };
}

function forward(
  id: string,
  protocol: DesiredPortForward['protocol'],
  host: [number, number],
  target: string,
  to: number,
  extra: Partial<DesiredPortForward> = {},
) {
  return {
    id: `00000000-0000-4000-8000-0000000f${id}`,
    protocol,
    hostAddress: null,
    hostPorts: { start: host[0], end: host[1] },
    targetAddress: target,
    targetPorts: { start: to, end: to + host[1] - host[0] },
    sourceCidrs: [],
    ...extra,
  };
}

/** Forwards over both protocols, a port range, an IPv6 forward on one host address, a source allow-list. */
const forwards = () =>
  state([
    instance(A, '10.0.0.10', 'fd00::10', {
      portForwards: [
        forward('0a01', 'both', [10022, 10022], '10.0.0.10', 22),
        forward('0a02', 'tcp', [18100, 18102], '10.0.0.10', 8100, { sourceCidrs: ['203.0.113.0/24', '192.0.2.7/32'] }),
        forward('0a03', 'tcp', [443, 443], 'fd00::10', 443, { hostAddress: '2001:db8::1' }),
      ],
    }),
    instance(B, '10.0.0.11', null, { portForwards: [forward('0b01', 'udp', [5353, 5353], '10.0.0.11', 53)] }),
  ]);

type Rule = DesiredInstance['firewall']['rules'][number];
const rule = (n: string, priority: number, extra: Partial<Rule>): Rule => ({
  id: `00000000-0000-4000-8000-0000000001${n}`,
  direction: 'inbound',
  protocol: 'tcp',
  sourceCidr: null,
  destinationCidr: null,
  ports: [],
  action: 'allow',
  priority,
  ...extra,
});

/** Firewalls with default-drop policies and rules given out of priority order: allow, reject, drop, ICMP, IPv6, outbound. */
const firewalls = () =>
  state([
    instance(A, '10.0.0.10', 'fd00::10', {
      firewall: {
        inboundPolicy: 'drop',
        outboundPolicy: 'allow',
        rules: [
          rule('03', 30, { protocol: 'all', sourceCidr: '192.0.2.0/24', action: 'drop' }),
          rule('01', 10, { ports: [{ start: 22, end: 22 }], sourceCidr: '203.0.113.0/24' }),
          rule('02', 20, {
            ports: [
              { start: 80, end: 80 },
              { start: 8000, end: 8100 },
            ],
            action: 'reject',
          }),
          rule('04', 5, { protocol: 'icmp' }),
          rule('05', 40, { sourceCidr: '2001:db8:1::/48', ports: [{ start: 443, end: 443 }] }),
          rule('06', 50, { direction: 'outbound', protocol: 'udp', destinationCidr: '198.51.100.53/32', ports: [{ start: 53, end: 53 }], action: 'reject' }),
        ],
      },
    }),
    instance(B, '10.0.0.11', null, { firewall: { inboundPolicy: 'allow', outboundPolicy: 'drop', rules: [] } }),
  ]);

/** What an apply sends after `before`, to reach `after` (the frame as Dataplane.apply renders it). */
function incremental(before: DesiredState, after: DesiredState, options: RenderOptions = {}) {
  const frame = (s: DesiredState) => contentOfCommands(renderRuleset(s, { ...options, forwardElements: false }));
  return incrementalChange({ state: before, content: frame(before) }, after, frame(after), options);
}

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;

describe('renderRuleset', () => {
  it('renders an empty desired state', async () => {
    await expect(json(renderRuleset(state([])))).toMatchFileSnapshot('golden/ruleset-empty.json');
  });

  it('renders forwards: both protocols, a port range, IPv6 on a host address, a source allow-list', async () => {
    await expect(json(renderRuleset(forwards()))).toMatchFileSnapshot('golden/ruleset-forwards.json');
  });

  it('renders firewalls in priority order with their policies', async () => {
    await expect(json(renderRuleset(firewalls()))).toMatchFileSnapshot('golden/ruleset-firewalls.json');
  });

  it('renders forwards as the driver base keeps them: no instance counters, no forward chain without a firewall', async () => {
    const commands = renderRuleset(forwards(), { instanceCounters: false });
    await expect(json(commands)).toMatchFileSnapshot('golden/ruleset-forwards-lean.json');
    expect(JSON.stringify(commands)).not.toMatch(/"forward"|ctr_in|ctr_out/);
  });

  it('leaves the forward elements out of the frame', () => {
    const frame = JSON.stringify(renderRuleset(forwards(), { forwardElements: false }));
    expect(frame).not.toContain('10022');
    expect(JSON.stringify(renderRuleset(forwards()))).toContain('10022');
  });
});

describe('incremental commands', () => {
  it('sends nothing when nothing changed', () => {
    expect(incremental(forwards(), forwards())).toEqual([]);
  });

  it('adds one forward as its elements only', async () => {
    const after = forwards();
    after.instances[1]!.portForwards.push(forward('0b02', 'tcp', [2222, 2222], '10.0.0.11', 22));
    await expect(json(incremental(forwards(), after))).toMatchFileSnapshot('golden/incremental-add-forward.json');
  });

  it('removes a forward with an allow-list, and its source rule', async () => {
    const after = forwards();
    after.instances[0]!.portForwards.splice(1, 1);
    await expect(json(incremental(forwards(), after))).toMatchFileSnapshot('golden/incremental-remove-forward.json');
  });

  it("adds a forward's first rate limit as its rules and its counter element, and removes it the same way", async () => {
    const after = forwards();
    after.instances[1]!.portForwards[0] = { ...after.instances[1]!.portForwards[0]!, rateLimit: { perSource: 50, total: 1000, burst: 5, action: 'drop' } };
    const added = incremental(forwards(), after)!;
    await expect(json(added)).toMatchFileSnapshot('golden/incremental-add-rate-limit.json');
    // the refused connections are counted on the forward's element of the rate-limit counter set
    expect(added.filter((c) => 'add' in c && 'element' in (c.add as object))).toEqual([
      {
        add: {
          element: expect.objectContaining({
            name: 'fwd4_rlc',
            elem: [expect.objectContaining({ elem: expect.objectContaining({ comment: expect.stringMatching(/^fwd_/) }) })],
          }),
        },
      },
    ]);
    const removed = incremental(after, forwards())!;
    expect(removed.filter((c) => 'delete' in c)).toEqual([{ delete: { element: expect.objectContaining({ name: 'fwd4_rlc' }) } }]);
  });

  it('rewrites only the firewall chain whose rules changed', async () => {
    const after = firewalls();
    after.instances[0]!.firewall.rules[1]!.action = 'drop';
    const commands = incremental(firewalls(), after);
    await expect(json(commands)).toMatchFileSnapshot('golden/incremental-firewall-rule.json');
  });

  it('adds an instance: its chains, counters and dispatch entries', async () => {
    const before = state([forwards().instances[0]!]);
    await expect(json(incremental(before, forwards()))).toMatchFileSnapshot('golden/incremental-add-instance.json');
  });

  it("adds an instance's first firewall rule as its chain, the forward chain and its dispatch entries, without a table replace", async () => {
    const after = forwards();
    after.instances[1]!.firewall.rules.push(rule('07', 10, { ports: [{ start: 53, end: 53 }], protocol: 'udp', action: 'drop' }));
    const commands = incremental(forwards(), after, { instanceCounters: false });
    expect(commands).toBeDefined();
    await expect(json(commands)).toMatchFileSnapshot('golden/incremental-first-firewall-rule.json');
    // and back: the chain goes again, as the dispatch entries
    expect(JSON.stringify(incremental(after, forwards(), { instanceCounters: false }))).toContain(
      '"delete":{"chain":{"family":"inet","table":"gatehouse","name":"forward"}}',
    );
  });

  it('re-diffs every forward when the public addresses change', async () => {
    const after = state(forwards().instances, ['198.51.100.2', '2001:db8::1']);
    await expect(json(incremental(forwards(), after))).toMatchFileSnapshot('golden/incremental-public-addresses.json');
  });
});

describe('driver base', () => {
  it('narrows the dataplane capabilities for a backend without IPv6 and with fewer NICs', () => {
    const narrowed = dataplaneCapabilities({ ipv6: false, nics: { max: 16 } });
    expect(narrowed.portForwards).toEqual({ ...DATAPLANE_CAPABILITIES.portForwards, ipv6: false });
    expect(narrowed.firewall).toEqual({ ...DATAPLANE_CAPABILITIES.firewall, ipv6: false });
    expect(narrowed.shaping).toEqual(DATAPLANE_CAPABILITIES.shaping);
    expect(narrowed.nics).toEqual({ max: 16, hotplug: true, staticAddressing: true });
    expect(dataplaneCapabilities()).toEqual(DATAPLANE_CAPABILITIES);
  });

  it("shapes a NIC with its own limit, else the instance's, and not at all without rates", () => {
    const limit = (id: string, nicId: string | null, ingressBps: number | null, egressBps: number | null) => ({
      id,
      nicId,
      ingressBps,
      egressBps,
      ingressBurstBytes: null,
      egressBurstBytes: null,
      monthlyQuotaBytes: null,
      quotaAction: null,
      throttleBps: null,
    });
    const vm = instance(A, '10.0.0.10', null, { bandwidth: [limit('l1', null, 10_000_000, null), limit('l2', 'nic-2', 1_000_000, 2_000_000)] });
    expect(shapingFor(vm, 'nic-1')).toEqual({ ingressBps: 10_000_000, egressBps: null, ingressBurstBytes: null, egressBurstBytes: null });
    expect(shapingFor(vm, 'nic-2')).toEqual({ ingressBps: 1_000_000, egressBps: 2_000_000, ingressBurstBytes: null, egressBurstBytes: null });
    expect(shapingFor({ ...vm, bandwidth: [limit('l3', null, null, null)] }, 'nic-1')).toBeNull();
    expect(shapingFor({ ...vm, bandwidth: [] }, 'nic-1')).toBeNull();
  });
});
