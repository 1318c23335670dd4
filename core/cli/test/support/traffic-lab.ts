/**
 * The setting of the traffic tests on real traffic (traffic-quota-e2e, traffic-live-rate-e2e), as
 * root: a controller in this process (PGlite, optionally with a clock the test moves), the host
 * agent with the Linux plugin reporting every 500 ms, and an instance namespace behind port
 * forwards from the host's public address 198.51.100.1, reached from a client namespace:
 *
 *   cli 198.51.100.2 ── host 198.51.100.1: forwards 18080 → vm:8080 (answers "hello"), 15201 → vm:5201 (iperf3 -s)
 *
 * The instance gets the bandwidth limit the test names (setBandwidthLimit's fields), if any.
 */
import { LinuxDriver } from '@gatehouse/plugin-linux';
import { HostAgent } from '@gatehouse/host-agent';
import { NetnsLab, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { startController, type Controller, type ControllerOptions } from '@gatehouse/server';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ERR = '... on Error { code message field value }';

/**
 * Polls `probe` every 200 ms until it gives a value (errors count as not yet). On time-out the
 * error names what the last probe threw and, with `seen`, what the test last saw.
 */
export async function until<T>(probe: () => Promise<T | undefined | false>, ms = 30_000, seen?: () => string): Promise<T> {
  const deadline = Date.now() + ms;
  let failure: unknown;
  for (;;) {
    const value = await probe().catch((err: unknown) => {
      failure = err;
      return undefined;
    });
    if (value) return value;
    if (Date.now() > deadline) {
      const threw = failure === undefined ? '' : `; the last failed probe threw: ${(failure as Error).message ?? String(failure)}`;
      throw new Error(`condition not reached in ${ms} ms${threw}${seen ? `; ${seen()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A running traffic lab. */
export interface TrafficLab {
  controller: Controller;
  /** The bootstrap admin's token. */
  admin: string;
  client: LabNamespace;
  vm: LabNamespace;
  hostId: string;
  instanceId: string;
  /** The running agent (`restartAgent` replaces it). */
  agent: HostAgent;
  api<T = any>(query: string, variables?: Record<string, unknown>): Promise<T>;
  /** Stops the agent and starts a new one with the same token and driver. */
  restartAgent(): Promise<void>;
  /** Waits until the agent applied the host's newest desired state and the instance's limit says APPLIED. */
  applied(): Promise<void>;
  /** iperf3 from the client to the instance (reverse: the instance sends); the run's JSON `end`. */
  iperf(reverse: boolean, args: string[]): Promise<{ sum_received: { bits_per_second: number } }>;
  /** The last warnings and errors the controller and the agent logged (kept for a failure's message). */
  log(): string[];
  stop(): Promise<void>;
}

/**
 * Starts the lab; `limit` is setBandwidthLimit's input besides instanceId, as GraphQL text
 * (`ingressMbps: 40, egressMbps: 40`). On failure what was started is stopped again.
 */
export async function startTrafficLab(options: {
  name: string;
  cidr: string;
  gateway: string;
  limit?: string;
  clock?: ControllerOptions['clock'];
}): Promise<TrafficLab> {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), `gatehouse-${options.name}-`));
  const servers: LabServer[] = [];
  let controller: Controller | undefined;
  let agent: HostAgent | undefined;
  let iperfServer: ChildProcess | undefined;
  const logged: string[] = [];
  const keep = (who: string) => (message: string) => {
    logged.push(`${new Date().toISOString().slice(11, 23)} ${who}: ${message}`);
    if (logged.length > 40) logged.shift();
  };
  const quiet = () => {};
  const stop = async () => {
    if (iperfServer?.exitCode === null) iperfServer.kill('SIGTERM');
    await agent?.stop();
    for (const s of servers) s.stop();
    await controller?.close();
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const host = await lab.namespace('host');
    const client = await lab.namespace('cli');
    const vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello'));
    const started = await startController({
      store: { kind: 'pglite', dataDir },
      port: 0,
      logger: { info: quiet, warn: keep('controller'), error: keep('controller') },
      ...(options.clock ? { clock: options.clock } : {}),
    });
    controller = started;
    const admin = started.bootstrapSecret!;
    const api = async <T = any>(query: string, variables?: Record<string, unknown>): Promise<T> => {
      const response = await fetch(started.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: T; errors?: unknown };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data!;
    };
    await api(
      `mutation { createIpPool(input: { name: "${options.name}", kind: PRIVATE, network: "${lab.prefix}br", cidr: "${options.cidr}", gateway: "${options.gateway}" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
    );
    const hostId = (
      await api(
        `mutation { createHost(input: { name: "${options.name}-host", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
      )
    ).createHost.host.id as string;
    const instanceId = (
      await api(
        `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
        { hostId, name: vm.name },
      )
    ).createInstance.instance.id as string;
    for (const [hostPort, targetPort] of [
      ['18080', '8080'],
      ['15201', '5201'],
    ])
      await api(
        `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "${hostPort}", targetPort: "${targetPort}" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id: instanceId },
      );
    if (options.limit) {
      const limit = await api(
        `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ${options.limit} }) { ... on SetBandwidthLimitPayload { limit { id } } ${ERR} } }`,
        { id: instanceId },
      );
      if (!limit.setBandwidthLimit.limit) throw new Error(`setBandwidthLimit refused: ${JSON.stringify(limit)}`);
    }
    const token = (
      await api(
        `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
        { hostId },
      )
    ).createApiToken.created.secret as string;
    const makeAgent = () =>
      new HostAgent({
        controllerUrl: started.url,
        token,
        driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
        logger: { info: quiet, warn: keep('agent'), error: keep('agent') },
        statsIntervalMs: 500,
      });
    agent = makeAgent();
    await agent.start();
    iperfServer = spawn('ip', ['netns', 'exec', vm.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
    const trafficLab: TrafficLab = {
      controller: started,
      admin,
      client,
      vm,
      hostId,
      instanceId,
      agent,
      api,
      async restartAgent() {
        await agent!.stop();
        agent = makeAgent();
        trafficLab.agent = agent;
        await agent.start();
      },
      applied: () =>
        until(async () => {
          const d = await api(
            `query($h: ID!, $i: ID!) { host(id: $h) { desiredRevision agent { appliedRevision } } instance(id: $i) { bandwidth { status } } }`,
            {
              h: hostId,
              i: instanceId,
            },
          );
          return d.host.agent.appliedRevision === d.host.desiredRevision && d.instance.bandwidth[0].status === 'APPLIED';
        }).then(() => undefined),
      async iperf(reverse, args) {
        const out = await client.exec('iperf3', ['-c', '198.51.100.1', '-p', '15201', '-J', ...args, ...(reverse ? ['-R'] : [])], { timeoutMs: 90_000 });
        return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end;
      },
      log: () => [...logged],
      stop,
    };
    return trafficLab;
  } catch (err) {
    await stop();
    throw err;
  }
}
