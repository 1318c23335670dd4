/**
 * The pure capability checks the controller and the agent share: each capability kind refused
 * with its key and field, everything passing a driver that has it all, and a document split into
 * what a driver can apply and the failed results of the rest.
 */
import { describe, expect, it } from 'vitest';
import {
  checkBandwidth,
  checkFirewallPolicy,
  checkFirewallRule,
  checkNics,
  checkPortForward,
  unsupportedObjects,
  withoutObjects,
  type DesiredState,
  type DriverCapabilities,
} from '../src/index.js';

/** A document of one instance `i1` with no NICs; its firewall, limits and forwards as given (default none). */
function oneInstance(parts: Partial<Pick<DesiredState['instances'][number], 'firewall' | 'bandwidth' | 'portForwards'>>): DesiredState {
  return {
    apiVersion: 1,
    hostId: 'h',
    hostName: 'h',
    revision: 1,
    publicAddresses: [],
    instances: [
      {
        id: 'i1',
        name: 'vm',
        externalId: null,
        nics: [],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
        bandwidth: [],
        portForwards: [],
        ...parts,
      },
    ],
  };
}

const ALL: DriverCapabilities = {
  portForwards: {
    implementation: 'dataplane',
    protocols: ['tcp', 'udp'],
    portRanges: true,
    ipv6: true,
    sourceAllowLists: true,
    rateLimits: true,
    multiTarget: true,
  },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: { implementation: 'native', ingress: true, egress: true, burst: true },
  nics: { max: 2, hotplug: false, staticAddressing: true },
};
const NONE: DriverCapabilities = { portForwards: null, firewall: null, shaping: null, nics: { max: 1, hotplug: false, staticAddressing: false } };
const narrow = (change: (c: DriverCapabilities) => void) => {
  const c = structuredClone(ALL);
  change(c);
  return c;
};

const forward = {
  protocol: 'tcp' as const,
  ipv6: false,
  targetAddress: '10.0.0.2',
  hostPorts: { start: 80, end: 80 },
  targetPorts: { start: 80, end: 80 },
  sourceCidrs: [],
};
const rule = { direction: 'inbound' as const, action: 'drop' as const, protocol: 'tcp' as const, sourceCidr: null, destinationCidr: null };
const limit = { ingressBps: 1e6, egressBps: 1e6, ingressBurstBytes: null, egressBurstBytes: null };

describe('capability checks', () => {
  it('pass everything on a driver that has it all', () => {
    expect(checkPortForward(ALL, { ...forward, protocol: 'both', ipv6: true, targetPorts: { start: 1, end: 9 }, sourceCidrs: ['10.0.0.0/8'] })).toBeUndefined();
    expect(checkPortForward(ALL, { ...forward, rateLimit: { perSource: 50, total: null, burst: 5, action: 'drop' } })).toBeUndefined();
    expect(
      checkPortForward(ALL, { ...forward, balance: { targets: [{ instanceId: 'i', address: '10.0.0.2', weight: 1 }], sourceAffinity: true } }),
    ).toBeUndefined();
    expect(checkFirewallRule(ALL, { ...rule, protocol: 'icmp', sourceCidr: '2001:db8::/32' })).toBeUndefined();
    expect(checkFirewallPolicy(ALL, 'outbound', 'reject')).toBeUndefined();
    expect(checkBandwidth(ALL, { ...limit, ingressBurstBytes: 10_000 })).toBeUndefined();
    expect(checkNics(ALL, 2, { adding: true, running: false })).toBeUndefined();
  });

  it.each([
    ['portForwards', checkPortForward(NONE, forward), 'protocol'],
    [
      'portForwards.protocols',
      checkPortForward(
        narrow((c) => (c.portForwards!.protocols = ['tcp'])),
        { ...forward, protocol: 'udp' },
      ),
      'protocol',
    ],
    [
      'portForwards.ipv6',
      checkPortForward(
        narrow((c) => (c.portForwards!.ipv6 = false)),
        { ...forward, ipv6: true, targetAddress: 'fd00::2' },
      ),
      'targetAddress',
    ],
    [
      'portForwards.portRanges',
      checkPortForward(
        narrow((c) => (c.portForwards!.portRanges = false)),
        { ...forward, targetPorts: { start: 1, end: 2 } },
      ),
      'targetPort',
    ],
    [
      'portForwards.sourceAllowLists',
      checkPortForward(
        narrow((c) => (c.portForwards!.sourceAllowLists = false)),
        { ...forward, sourceCidrs: ['10.0.0.0/8'] },
      ),
      'sourceCidrs',
    ],
    [
      // a driver that does not declare the key (older plugins) has no rate limits
      'portForwards.rateLimits',
      checkPortForward(
        narrow((c) => delete c.portForwards!.rateLimits),
        { ...forward, rateLimit: { perSource: null, total: 100, burst: 10, action: 'reject' } },
      ),
      'rateLimit',
    ],
    [
      // likewise several targets behind one port
      'portForwards.multiTarget',
      checkPortForward(
        narrow((c) => delete c.portForwards!.multiTarget),
        { ...forward, balance: { targets: [{ instanceId: 'i', address: '10.0.0.2', weight: 2 }], sourceAffinity: false } },
      ),
      'targets',
    ],
    ['firewall', checkFirewallRule(NONE, rule), 'direction'],
    [
      'firewall.directions',
      checkFirewallRule(
        narrow((c) => (c.firewall!.directions = ['outbound'])),
        rule,
      ),
      'direction',
    ],
    [
      'firewall.actions',
      checkFirewallRule(
        narrow((c) => (c.firewall!.actions = ['allow'])),
        rule,
      ),
      'action',
    ],
    [
      'firewall.actions',
      checkFirewallPolicy(
        narrow((c) => (c.firewall!.actions = ['allow', 'drop'])),
        'inbound',
        'reject',
      ),
      'inboundPolicy',
    ],
    [
      'firewall.icmp',
      checkFirewallRule(
        narrow((c) => (c.firewall!.icmp = false)),
        { ...rule, protocol: 'icmp' },
      ),
      'protocol',
    ],
    [
      'firewall.ipv6',
      checkFirewallRule(
        narrow((c) => (c.firewall!.ipv6 = false)),
        { ...rule, destinationCidr: 'fd00::/64' },
      ),
      'destinationCidr',
    ],
    ['shaping', checkBandwidth(NONE, limit), 'ingressBps'],
    [
      'shaping.ingress',
      checkBandwidth(
        narrow((c) => (c.shaping!.ingress = false)),
        limit,
      ),
      'ingressBps',
    ],
    [
      'shaping.egress',
      checkBandwidth(
        narrow((c) => (c.shaping!.egress = false)),
        limit,
      ),
      'egressBps',
    ],
    [
      'shaping.burst',
      checkBandwidth(
        narrow((c) => (c.shaping!.burst = false)),
        { ...limit, egressBurstBytes: 10_000 },
      ),
      'egressBurstBytes',
    ],
    ['nics.max', checkNics(ALL, 3), 'nics'],
    ['nics.hotplug', checkNics(ALL, 2, { adding: true, running: true }), 'nics'],
  ])('refuses what needs %s', (capability, violation, field) => {
    expect(violation).toMatchObject({ capability, field });
  });

  it('splits a document into what the driver applies and failed results for the rest', () => {
    const desired = oneInstance({
      firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [{ id: 'r1', priority: 1, ports: [], ...rule }] },
      bandwidth: [{ id: 'b1', nicId: null, quotaAction: null, throttleBps: null, monthlyQuotaBytes: null, ...limit }],
      portForwards: [
        {
          id: 'f4',
          protocol: 'tcp',
          hostAddress: null,
          hostPorts: { start: 1, end: 1 },
          targetAddress: '10.0.0.2',
          targetPorts: { start: 1, end: 1 },
          sourceCidrs: [],
        },
        {
          id: 'f6',
          protocol: 'tcp',
          hostAddress: null,
          hostPorts: { start: 2, end: 2 },
          targetAddress: 'fd00::2',
          targetPorts: { start: 2, end: 2 },
          sourceCidrs: [],
        },
      ],
    });
    const caps = narrow((c) => {
      c.portForwards!.ipv6 = false;
      c.shaping = null;
    });
    const failed = unsupportedObjects(caps, desired, 'lxd');
    expect(failed).toEqual([
      {
        objectType: 'port_forward',
        objectId: 'f6',
        status: 'failed',
        error: {
          code: 'CAPABILITY_NOT_SUPPORTED',
          message: 'its driver lxd does not support IPv6 port forwards (capabilities.portForwards.ipv6)',
          path: 'targetAddress',
        },
      },
      {
        objectType: 'bandwidth_limit',
        objectId: 'b1',
        status: 'failed',
        error: { code: 'CAPABILITY_NOT_SUPPORTED', message: 'its driver lxd does not support bandwidth limits (capabilities.shaping)', path: 'ingressBps' },
      },
    ]);
    const rest = withoutObjects(desired, failed).instances[0]!;
    expect(rest.portForwards.map((f) => f.id)).toEqual(['f4']);
    expect(rest.bandwidth).toEqual([]);
    expect(rest.firewall.rules.map((r) => r.id)).toEqual(['r1']);
    expect(withoutObjects(desired, [])).toBe(desired);
  });

  it('reports no forward of a driver that takes every kind, and each forward needing what a narrower one lacks', () => {
    const base = { hostAddress: null, hostPorts: { start: 1, end: 1 }, targetAddress: '10.0.0.2', targetPorts: { start: 1, end: 1 }, sourceCidrs: [] };
    const asking = {
      'portForwards.protocols': { ...base, id: 'udp', protocol: 'both' as const },
      'portForwards.ipv6': { ...base, id: 'v6', protocol: 'tcp' as const, targetAddress: 'fd00::2' },
      'portForwards.portRanges': { ...base, id: 'range', protocol: 'tcp' as const, hostPorts: { start: 1, end: 9 }, targetPorts: { start: 1, end: 9 } },
      'portForwards.sourceAllowLists': { ...base, id: 'allow', protocol: 'tcp' as const, sourceCidrs: ['192.0.2.0/24'] },
      'portForwards.rateLimits': {
        ...base,
        id: 'limit',
        protocol: 'tcp' as const,
        rateLimit: { perSource: 5, total: null, burst: 0, action: 'drop' as const },
      },
      'portForwards.multiTarget': {
        ...base,
        id: 'balance',
        protocol: 'tcp' as const,
        balance: { targets: [{ instanceId: 'i1', address: '10.0.0.2', weight: 1 }], sourceAffinity: false },
      },
    };
    const desired = oneInstance({ portForwards: Object.values(asking) });
    expect(unsupportedObjects(ALL, desired, 'all')).toEqual([]);
    const without: Record<keyof typeof asking, (c: DriverCapabilities) => void> = {
      'portForwards.protocols': (c) => (c.portForwards!.protocols = ['tcp']),
      'portForwards.ipv6': (c) => (c.portForwards!.ipv6 = false),
      'portForwards.portRanges': (c) => (c.portForwards!.portRanges = false),
      'portForwards.sourceAllowLists': (c) => (c.portForwards!.sourceAllowLists = false),
      'portForwards.rateLimits': (c) => delete c.portForwards!.rateLimits,
      'portForwards.multiTarget': (c) => (c.portForwards!.multiTarget = false),
    };
    for (const [capability, narrowing] of Object.entries(without) as [keyof typeof asking, (c: DriverCapabilities) => void][]) {
      const failed = unsupportedObjects(narrow(narrowing), desired, 'narrow');
      expect(failed.map((f) => [f.objectId, f.error?.message])).toEqual([[asking[capability].id, expect.stringContaining(`(capabilities.${capability})`)]]);
    }
  });
});
