/** The desired-state compiler on a hand-made snapshot: ordering, filtering and resolved values. */
import { expect, it } from 'vitest';
import { compileDesiredState, type HostSnapshot } from '../src/desired-state/compile.js';

const at = new Date('2026-01-01T00:00:00Z');
const host = {
  id: 'h',
  name: 'hv-1',
  backend: 'linux',
  driver: null,
  portRangeStart: 1024,
  portRangeEnd: 65535,
  reservedPorts: [],
  maxForwardPorts: 1000,
  publicAddresses: ['203.0.113.10'],
  desiredRevision: 7,
  defaultPoolId: null,
  discoveryOwnerId: null,
  trafficCapBps: null,
  createdAt: at,
};
const instance = (id: string) => ({
  id,
  hostId: 'h',
  ownerId: 'u',
  name: `vm-${id}`,
  externalId: null,
  lastDiscoveredAt: null,
  firewallInboundPolicy: 'drop' as const,
  firewallOutboundPolicy: 'allow' as const,
  createdAt: at,
});
const rule = (id: string, direction: 'inbound' | 'outbound', priority: number, enabled = true) => ({
  id,
  instanceId: 'i1',
  ownerId: 'u',
  direction,
  protocol: 'tcp' as const,
  sourceCidr: null,
  destinationCidr: null,
  ports: [{ start: 22, end: 22 }],
  action: 'allow' as const,
  priority,
  enabled,
  note: '',
  status: 'pending' as const,
  statusError: null,
  changedRevision: 0,
  createdAt: at,
});

it('sorts instances, rules and limits, drops disabled rules and resolves automatic bursts', () => {
  const snapshot: HostSnapshot = {
    host,
    instances: [instance('i2'), instance('i1')],
    nics: [],
    addresses: [],
    pools: [],
    firewallRules: [rule('r3', 'outbound', 5), rule('r2', 'inbound', 50), rule('r1', 'inbound', 50), rule('r0', 'inbound', 1, false)],
    bandwidth: [
      {
        id: 'b2',
        instanceId: 'i1',
        nicId: 'n1',
        ownerId: 'u',
        ingressBps: 1_000_000_000,
        egressBps: null,
        ingressBurstBytes: null,
        egressBurstBytes: null,
        monthlyQuotaBytes: null,
        quotaAction: null,
        throttleBps: null,
        status: 'pending',
        statusError: null,
        changedRevision: 0,
        createdAt: at,
      },
      {
        id: 'b1',
        instanceId: 'i1',
        nicId: null,
        ownerId: 'u',
        ingressBps: null,
        egressBps: 5_000_000,
        ingressBurstBytes: null,
        egressBurstBytes: 64_000,
        monthlyQuotaBytes: null,
        quotaAction: null,
        throttleBps: null,
        status: 'pending',
        statusError: null,
        changedRevision: 0,
        createdAt: at,
      },
    ],
    portForwards: [],
  };
  const state = compileDesiredState(snapshot);
  expect(state).toMatchObject({ apiVersion: 1, hostId: 'h', revision: 7, publicAddresses: ['203.0.113.10'] });
  expect(state.instances.map((i) => i.id)).toEqual(['i1', 'i2']);
  expect(state.instances[0]!.firewall.rules.map((r) => r.id)).toEqual(['r1', 'r2', 'r3']);
  expect(state.instances[0]!.bandwidth).toMatchObject([
    { id: 'b1', nicId: null, egressBurstBytes: 64_000, ingressBurstBytes: null },
    { id: 'b2', nicId: 'n1', ingressBurstBytes: 1_250_000 },
  ]);
  expect(JSON.stringify(compileDesiredState({ ...snapshot, instances: [...snapshot.instances].reverse() }))).toBe(JSON.stringify(state));
});
