/**
 * One Linux host of a namespace lab under a real controller, as the forward end-to-end suites
 * start: a controller process (PGlite in `dataDir`), a private pool on the lab's bridge, a LINUX
 * host with one public address, one instance whose external id is the instance namespace's name,
 * and a host agent with the Linux plugin driving the host namespace.
 */
import { LinuxDriver } from '@gatehouse/plugin-linux';
import type { LabNamespace, NetnsLab } from '@gatehouse/sdk/testkit';
import { HostAgent } from '../src/index.js';
import { gql, startController, type Proc } from './support.js';

const ERR = '... on Error { code message field value }';

export interface LinuxLabHost {
  controller: { proc: Proc; url: string };
  /** The controller's first admin token. */
  admin: string;
  hostId: string;
  instanceId: string;
  agent: HostAgent;
}

/**
 * Starts the controller and the agent; `subnet` is the pool's /24 without its last part ("10.78.0"),
 * its .1 the gateway. On a failure the controller it started is stopped before the error is thrown.
 */
export async function startLinuxLabHost(o: {
  lab: NetnsLab;
  host: LabNamespace;
  vm: LabNamespace;
  dataDir: string;
  name: string;
  subnet: string;
  publicAddress: string;
}): Promise<LinuxLabHost> {
  const c = await startController(o.dataDir);
  try {
    const admin = c.bootstrapSecret!;
    const api = (query: string, variables?: Record<string, unknown>) => gql(c.url, admin, query, variables);
    const network = `${o.lab.prefix}br`;
    await api(
      `mutation { createIpPool(input: { name: "${o.name}", kind: PRIVATE, network: "${network}", cidr: "${o.subnet}.0/24", gateway: "${o.subnet}.1" }) { __typename } }`,
    );
    const h = await api(
      `mutation ($address: String!) { createHost(input: { name: "${o.name}-host", backend: LINUX, publicAddresses: [$address] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
      { address: o.publicAddress },
    );
    const hostId = h.createHost.host.id as string;
    const i = await api(
      `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${network}" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
      { hostId, name: o.vm.name },
    );
    const t = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    );
    const silent = { info: () => {}, warn: () => {}, error: () => {} };
    const agent = new HostAgent({
      controllerUrl: c.url,
      token: t.createApiToken.created.secret,
      driver: new LinuxDriver({ hostNetns: o.host.name, namespacePrefix: `${o.lab.prefix}-vm` }),
      logger: silent,
      backoff: { minMs: 100, maxMs: 1000 },
    });
    await agent.start();
    return { controller: c, admin, hostId, instanceId: i.createInstance.instance.id as string, agent };
  } catch (err) {
    await c.proc.stop('SIGKILL');
    throw err;
  }
}
