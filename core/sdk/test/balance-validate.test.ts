/**
 * A balanced forward in a desired-state document (`DesiredPortForward.balance`): what a driver is
 * handed is checked before it acts, each bad field named by its path.
 */
import { describe, expect, it } from 'vitest';
import { DriverConfigError, validateDesiredState, type DesiredBalance, type DesiredState } from '../src/index.js';

const target = (n: number, weight = 1) => ({ instanceId: `i${n}`, address: `10.0.0.${n}`, weight });

function doc(balance: DesiredBalance): DesiredState {
  return {
    apiVersion: 1,
    hostId: 'h',
    hostName: 'h',
    revision: 1,
    publicAddresses: ['198.51.100.1'],
    instances: [
      {
        id: 'i1',
        name: 'vm',
        externalId: null,
        nics: [],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
        bandwidth: [],
        portForwards: [
          {
            id: 'f',
            protocol: 'tcp',
            hostAddress: null,
            hostPorts: { start: 80, end: 80 },
            targetAddress: '10.0.0.1',
            targetPorts: { start: 80, end: 80 },
            sourceCidrs: [],
            balance,
          },
        ],
      },
    ],
  };
}

const path = (balance: DesiredBalance): string | undefined => {
  try {
    validateDesiredState(doc(balance));
    return undefined;
  } catch (err) {
    if (!(err instanceof DriverConfigError)) throw err;
    return err.message;
  }
};

describe('balanced forwards in the desired state', () => {
  it('takes 1 to 16 targets of the forward family with weights 1-100, targetAddress among them', () => {
    expect(path({ targets: [target(1, 100), target(2), target(3, 3)], sourceAffinity: true })).toBeUndefined();
    expect(path({ targets: Array.from({ length: 16 }, (_, i) => target(i + 1)), sourceAffinity: false })).toBeUndefined();
  });

  it.each([
    ['no target', { targets: [], sourceAffinity: false }, 'balance.targets'],
    ['17 targets', { targets: Array.from({ length: 17 }, (_, i) => target(i + 1)), sourceAffinity: false }, 'balance.targets'],
    ['weight 0', { targets: [target(1), target(2, 0)], sourceAffinity: false }, 'balance.targets[1].weight'],
    ['weight 101', { targets: [target(1), target(2, 101)], sourceAffinity: false }, 'balance.targets[1].weight'],
    ['an IPv6 target', { targets: [target(1), { instanceId: 'i2', address: 'fd00::2', weight: 1 }], sourceAffinity: false }, 'balance.targets[1].address'],
    ['an address twice', { targets: [target(1), target(2), target(2)], sourceAffinity: false }, 'balance.targets[2].address'],
    ['without targetAddress', { targets: [target(2), target(3)], sourceAffinity: false }, 'balance.targets'],
    ['affinity not a boolean', { targets: [target(1), target(2)], sourceAffinity: 'yes' as unknown as boolean }, 'balance.sourceAffinity'],
  ])('refuses %s, naming the field', (_name, balance, field) => {
    expect(path(balance)).toContain(`desired.instances[0].portForwards[0].${field}`);
  });
});
