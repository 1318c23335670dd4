/** What the real-traffic suites (traffic-e2e, traffic-robustness) share: the byte-counting sink in the instance and the controller objects of the lab. */
import type { LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';

const ERR = '... on Error { code message field value }';

/** A sink in the instance namespace on port 9000: counts what each connection sends and prints `received N` when the sender closes. */
export function startByteSink(vm: LabNamespace): ChildProcess {
  return spawn(
    'ip',
    [
      'netns',
      'exec',
      vm.name,
      process.execPath,
      '-e',
      `require('net').createServer(c=>{let n=0;c.on('data',b=>n+=b.length);c.on('end',()=>{console.log('received '+n);c.end()})}).listen(9000)`,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
}

/** A GraphQL call as the admin (throws on errors). */
type Api = <T = any>(query: string, variables?: Record<string, unknown>) => Promise<T>;

/**
 * Creates what a traffic lab needs on the controller: an IP pool on the lab's bridge, a LINUX host
 * whose public address is 198.51.100.1, the instance `vm1` in the `vm` namespace, its port forwards
 * (host ports → target ports, in order) and the host's AGENT token.
 */
export async function createTrafficObjects(
  api: Api,
  options: { bridge: string; vm: LabNamespace; pool: { name: string; cidr: string; gateway: string }; hostName: string; forwards: [string, string][] },
): Promise<{ hostId: string; instanceId: string; forwardIds: string[]; agentToken: string }> {
  const { bridge, pool } = options;
  await api(
    `mutation { createIpPool(input: { name: "${pool.name}", kind: PRIVATE, network: "${bridge}", cidr: "${pool.cidr}", gateway: "${pool.gateway}" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
  );
  const hostId = (
    await api(
      `mutation { createHost(input: { name: "${options.hostName}", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
    )
  ).createHost.host.id as string;
  const instanceId = (
    await api(
      `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${bridge}" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
      { hostId, name: options.vm.name },
    )
  ).createInstance.instance.id as string;
  const forwardIds: string[] = [];
  for (const [hostPort, targetPort] of options.forwards)
    forwardIds.push(
      (
        await api(
          `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "${hostPort}", targetPort: "${targetPort}" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
          { id: instanceId },
        )
      ).createPortForward.portForward.id,
    );
  const agentToken = (
    await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    )
  ).createApiToken.created.secret as string;
  return { hostId, instanceId, forwardIds, agentToken };
}
