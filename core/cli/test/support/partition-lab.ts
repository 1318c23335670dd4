/**
 * A controller and a host agent in namespaces of their own, joined by one veth pair, so that the
 * test can cut the agent off (nftables in the host's namespace drops everything to and from the
 * controller) and heal the cut: the setting of partition.test.ts and of bench/outage.ts.
 *
 *   ctl namespace: the controller (PGlite), 192.0.2.1 ── host namespace: the agent, 192.0.2.2,
 *   the Linux plugin's bridge and forwards, public address 198.51.100.1 ── cli namespace (client);
 *   instance namespaces <prefix>-vm1 (answers on 8080), more made by the test.
 *
 * The test process reaches the controller only through the ctl namespace, so its GraphQL
 * requests run there (`node -e` with fetch).
 */
import { NetnsLab, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killController, linuxAgentArgs, spawnAgent, spawnController, type AgentProcess, type ControllerProcess } from './processes.js';

const CONTROLLER_ADDRESS = '192.0.2.1';
/** The table the cut lives in (never the agent's `inet gatehouse`). */
const CUT_TABLE = 'gh_partition';
export const PUBLIC_ADDRESS = '198.51.100.1';
const ERR = '... on Error { code message field value }';

/** A host agent that the test can cut off from its controller. */
export class PartitionLab {
  readonly lab = new NetnsLab();
  ctl!: LabNamespace;
  host!: LabNamespace;
  client!: LabNamespace;
  controller!: ControllerProcess;
  agent!: AgentProcess;
  secret!: string;
  hostId!: string;
  instanceId!: string;
  private token!: string;
  private readonly dir = mkdtempSync(join(tmpdir(), 'gatehouse-partition-'));
  private readonly servers: LabServer[] = [];

  /** Namespaces, the controller with one host, instance and forward (18080 → 8080), and the agent, converged. */
  async open(): Promise<void> {
    this.ctl = await this.lab.namespace('ctl');
    this.host = await this.lab.namespace('host');
    this.client = await this.lab.namespace('cli');
    const vm = await this.lab.namespace('vm1');
    await this.lab.link(this.ctl, `${CONTROLLER_ADDRESS}/24`, this.host, '192.0.2.2/24');
    await this.lab.link(this.client, '198.51.100.2/24', this.host, `${PUBLIC_ADDRESS}/24`);
    this.servers.push(tcpServer(vm, 8080, 'hello from vm1'));
    this.controller = await spawnController(['--data-dir', join(this.dir, 'pglite'), '--host', CONTROLLER_ADDRESS], { DATABASE_URL: '' }, this.ctl.name);
    for (const end = Date.now() + 30_000; !this.secret && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
      this.secret = /keep it:\s+(gh_\S+)\n/.exec(this.controller.output())?.[1] ?? '';
    const network = `${this.lab.prefix}br`;
    await this.api(
      `mutation { createIpPool(input: { name: "cut", kind: PRIVATE, network: "${network}", cidr: "10.76.0.0/24", gateway: "10.76.0.1" }) { __typename ${ERR} } }`,
    );
    this.hostId = (
      await this.api(
        `mutation { createHost(input: { name: "cut-host", backend: LINUX, publicAddresses: ["${PUBLIC_ADDRESS}"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
      )
    ).createHost.host.id;
    this.instanceId = (
      await this.api(
        `mutation($h: ID!, $x: String!) { createInstance(input: { hostId: $h, name: "vm1", externalId: $x, nics: [{ network: "${network}" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
        { h: this.hostId, x: vm.name },
      )
    ).createInstance.instance.id;
    this.token = (
      await this.api(
        `mutation($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
        {
          h: this.hostId,
        },
      )
    ).createApiToken.created.secret;
    await this.forward(18080);
    this.startAgent();
    await this.converged();
  }

  /** Starts the agent in the host's namespace (its state directory kept across restarts; `dist`: the built command); returns when it is spawned. */
  startAgent({ dist = false }: { dist?: boolean } = {}): AgentProcess {
    this.agent = spawnAgent(
      linuxAgentArgs({
        controllers: this.controller.url,
        hostId: this.hostId,
        hostNetns: this.host.name,
        namespacePrefix: `${this.lab.prefix}-vm`,
        stateDir: join(this.dir, 'agent'),
        extra: ['--discover-interval', '1000'],
      }),
      this.token,
      this.host.name,
      { dist },
    );
    return this.agent;
  }

  /** Empties the host namespace's ruleset (what a reboot leaves; the cut goes too). */
  async flushHost(): Promise<void> {
    await this.host.exec('nft', ['flush', 'ruleset']);
  }

  /** GraphQL as the admin, run in the controller's namespace; throws on errors. */
  async api<T = any>(query: string, variables?: Record<string, unknown>): Promise<T> {
    const code = `fetch(process.argv[1],{method:'POST',headers:{'content-type':'application/json',authorization:'Bearer '+process.argv[2]},body:process.argv[3]}).then(r=>r.text()).then(t=>process.stdout.write(t),e=>{console.error(e.message);process.exit(1)})`;
    const out = await this.ctl.exec(process.execPath, ['-e', code, this.controller.url, this.secret, JSON.stringify({ query, variables })]);
    const body = JSON.parse(out) as { data?: T; errors?: unknown[] };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data!;
  }

  /** Forwards `hostPort` of the host to vm1's 8080; returns the forward's id. */
  async forward(hostPort: number): Promise<string> {
    const r = await this.api(
      `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { i: this.instanceId, p: String(hostPort) },
    );
    if (!r.createPortForward.portForward) throw new Error(JSON.stringify(r.createPortForward));
    return r.createPortForward.portForward.id;
  }

  /** The host and its agent as the controller sees them. */
  async hostAgent(): Promise<{
    desiredRevision: number;
    agent: {
      online: boolean;
      appliedRevision: number | null;
      lastError: string | null;
      driftRepairs: number;
      lastDriftAt: string | null;
      discoveredInstances: { externalId: string }[];
    };
  }> {
    return (
      await this.api(
        `query($h: ID!) { host(id: $h) { desiredRevision agent { online appliedRevision lastError driftRepairs lastDriftAt discoveredInstances { externalId } } } }`,
        { h: this.hostId },
      )
    ).host;
  }

  /** Waits until the agent has applied the newest revision and reported it. */
  async converged(ms = 60_000): Promise<void> {
    for (const end = Date.now() + ms; ;) {
      const h = await this.hostAgent().catch(() => undefined);
      if (h?.agent.appliedRevision === h?.desiredRevision && h?.agent.appliedRevision != null) return;
      if (Date.now() > end)
        throw new Error(`the agent did not converge in ${ms} ms (${JSON.stringify(h)}); agent output:\n${this.agent?.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** What the client gets through `port` of the host's public address. */
  through(port: number, timeoutMs = 800): Promise<string> {
    return tcpOutcome(this.client, PUBLIC_ADDRESS, port, timeoutMs);
  }

  /** Drops every packet between the host's namespace and the controller (no RST, no ICMP: a silent cut). */
  async cut(): Promise<void> {
    const rule = (chain: string, field: 'saddr' | 'daddr') => ({
      rule: {
        family: 'inet',
        table: CUT_TABLE,
        chain,
        expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field } }, right: CONTROLLER_ADDRESS } }, { drop: null }],
      },
    });
    const chain = (name: string, hook: string) => ({ chain: { family: 'inet', table: CUT_TABLE, name, type: 'filter', hook, prio: -300, policy: 'accept' } });
    const ruleset = {
      nftables: [
        { table: { family: 'inet', name: CUT_TABLE } },
        chain('input', 'input'),
        chain('output', 'output'),
        rule('input', 'saddr'),
        rule('output', 'daddr'),
      ],
    };
    await this.nft(ruleset.nftables);
  }

  /** Heals the cut. */
  async heal(): Promise<void> {
    await this.nft([{ delete: { table: { family: 'inet', name: CUT_TABLE } } }]);
  }

  /** One nft transaction in the host's namespace, as JSON in an argument (nft cannot read a pipe as /dev/stdin; these are small). */
  private async nft(commands: object[]): Promise<void> {
    await this.host.exec('nft', ['-j', JSON.stringify({ nftables: commands })]);
  }

  /** Removes the agent's own table (drift the agent must repair). */
  async dropAgentTable(): Promise<void> {
    await this.nft([{ delete: { table: { family: 'inet', name: 'gatehouse' } } }]);
  }

  /** A new instance namespace (the backend's own doing, for discovery). */
  async newInstance(role: string): Promise<LabNamespace> {
    return this.lab.namespace(role);
  }

  /** Stops the agent and the controller (by PID), removes the namespaces and the data. */
  async close(): Promise<void> {
    await this.agent?.stop('SIGKILL');
    if (this.controller) await killController(this.controller);
    for (const s of this.servers) s.stop();
    await this.lab.cleanup();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
