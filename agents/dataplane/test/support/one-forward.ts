/**
 * The desired state of the traffic labs that exercise one forward: host 198.51.100.1, an instance
 * at 10.0.0.5 whose forward 198.51.100.1:10022 → 10.0.0.5:2222 the test changes version by version.
 */
import type { DesiredState } from '@gatehouse/sdk';

/** A forward of the lab's instance. */
export type Forward = DesiredState['instances'][number]['portForwards'][number];

/** The lab's forward as it starts. */
export const FORWARD: Forward = {
  id: 'e1000000-0000-4000-8000-000000000001',
  protocol: 'tcp',
  hostAddress: null,
  hostPorts: { start: 10022, end: 10022 },
  targetAddress: '10.0.0.5',
  targetPorts: { start: 2222, end: 2222 },
  sourceCidrs: [],
};

/** The lab host's desired state with its instance holding `forward`. */
export function oneForwardState(revision: number, forward: Forward): DesiredState {
  return {
    apiVersion: 1,
    hostId: 'h',
    hostName: 'lab',
    revision,
    publicAddresses: ['198.51.100.1'],
    instances: [
      {
        id: 'e0000000-0000-4000-8000-000000000005',
        name: 'vm',
        externalId: null,
        nics: [
          {
            id: 'e0000000-0000-4000-8000-00000000000f',
            name: 'eth0',
            mac: '02:00:00:00:00:05',
            network: 'br',
            addresses: [{ address: '10.0.0.5', prefixLength: 24, delegated: false, gateway: '10.0.0.1', dns: [] }],
          },
        ],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
        bandwidth: [],
        portForwards: [forward],
      },
    ],
  };
}
