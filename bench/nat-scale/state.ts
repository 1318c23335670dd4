/**
 * The desired state both NAT benchmarks apply: a fixed number of instances (so only the number of
 * forwards changes with N) at 10.0.0.5 and up in one /24, the forwards on the instance they target.
 */
import type { DesiredPortForward, DesiredState } from '@gatehouse/sdk';

/** One forward: host address and port → instance address and port. */
export interface Forward {
  hostAddress: string;
  hostPort: number;
  targetAddress: string;
  targetPort: number;
}

/** How many instances the forwards are spread over. */
export const INSTANCES = 16;

/** The address of the k-th instance. */
export function instanceAddress(k: number): string {
  return `10.0.0.${5 + k}`;
}

/** The desired state with `forwards` (ids f0, f1, …) on the instances they target. */
export function natDesiredState(forwards: readonly Forward[], publicAddresses: readonly string[]): DesiredState {
  const instances: DesiredState['instances'] = Array.from({ length: INSTANCES }, (_, k) => ({
    id: `i${k}`,
    name: `vm${k}`,
    externalId: null,
    nics: [
      {
        id: `n${k}`,
        name: 'eth0',
        mac: `02:00:00:00:00:${(5 + k).toString(16).padStart(2, '0')}`,
        network: 'br',
        addresses: [{ address: instanceAddress(k), prefixLength: 24, delegated: false, gateway: '10.0.0.1', dns: [] }],
      },
    ],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: [],
  }));
  forwards.forEach((f, i) => {
    const forward: DesiredPortForward = {
      id: `f${i}`,
      protocol: 'tcp',
      hostAddress: f.hostAddress,
      hostPorts: { start: f.hostPort, end: f.hostPort },
      targetAddress: f.targetAddress,
      targetPorts: { start: f.targetPort, end: f.targetPort },
      sourceCidrs: [],
    };
    instances[Number(f.targetAddress.split('.')[3]) - 5]!.portForwards.push(forward);
  });
  return { apiVersion: 1, hostId: 'bench', hostName: 'bench-host', revision: 1, publicAddresses: [...publicAddresses], instances };
}
