/**
 * Two controller replicas on one PostgreSQL database and a host agent (the Linux plugin on a lab
 * host namespace with one instance and a client) given both replicas' URLs: the setting of
 * replica-failover.test.ts and of bench/outage.ts, which SIGKILL the replica the agent is on and
 * watch it move to the other.
 */
import { NetnsLab, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { sql } from 'drizzle-orm';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '@gatehouse/server';
import { ERROR_FIELDS, createTestApi, createTestDatabase, post, type TestDatabase } from '@gatehouse/server/testing';
import { killController, linuxAgentArgs, spawnAgent, spawnController, type AgentProcess, type ControllerProcess } from './processes.js';

/** The client's view of the host's public address. */
export const PUBLIC_ADDRESS = '198.51.100.1';

/** The lab, the database, both replicas and the agent; `close` removes all of it. */
export class ReplicaLab {
  readonly lab = new NetnsLab();
  database!: TestDatabase;
  store!: Store;
  secret!: string;
  hostId!: string;
  instanceId!: string;
  /** The instance's address (forward target). */
  address!: string;
  token!: string;
  host!: LabNamespace;
  client!: LabNamespace;
  replicas: ControllerProcess[] = [];
  agent: AgentProcess | undefined;
  private readonly stateDir = mkdtempSync(join(tmpdir(), 'gatehouse-replica-agent-'));
  private readonly servers: LabServer[] = [];
  private readonly everything: ControllerProcess[] = [];

  /** Creates the namespaces, the database and its objects, one forward (18080 → 8080), both replicas and the agent, converged. */
  async open(): Promise<void> {
    this.host = await this.lab.namespace('host');
    this.client = await this.lab.namespace('cli');
    const vm = await this.lab.namespace('vm1');
    await this.lab.link(this.client, '198.51.100.2/24', this.host, `${PUBLIC_ADDRESS}/24`);
    this.servers.push(tcpServer(vm, 8080, 'hello from vm1'));
    this.database = await createTestDatabase();
    this.store = await openStore({ kind: 'postgres', url: this.database.url });
    const api = await createTestApi(this.store);
    this.secret = api.adminSecret;
    const network = `${this.lab.prefix}br`;
    const must = async (query: string, variables?: Record<string, unknown>) => {
      const r = await api.admin(query, variables);
      const answer = Object.values(r.data ?? {})[0] as { __typename?: string; message?: string } | undefined;
      if (r.errors || !answer || answer.message) throw new Error(JSON.stringify(r.errors ?? answer));
      return answer as any;
    };
    await must(
      `mutation { createIpPool(input: { name: "failover", kind: PRIVATE, network: "${network}", cidr: "10.77.0.0/24", gateway: "10.77.0.1" }) { __typename ${ERROR_FIELDS} } }`,
    );
    this.hostId = (
      await must(
        `mutation { createHost(input: { name: "failover-host", backend: LINUX, publicAddresses: ["${PUBLIC_ADDRESS}"] }) { ... on CreateHostPayload { host { id } } ${ERROR_FIELDS} } }`,
      )
    ).host.id;
    const instance = (
      await must(
        `mutation($h: ID!, $x: String!) { createInstance(input: { hostId: $h, name: "vm1", externalId: $x, nics: [{ network: "${network}" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${ERROR_FIELDS} } }`,
        { h: this.hostId, x: vm.name },
      )
    ).instance;
    this.instanceId = instance.id;
    this.address = instance.nics[0].addresses[0].address;
    this.token = (
      await must(
        `mutation($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERROR_FIELDS} } }`,
        {
          h: this.hostId,
        },
      )
    ).created.secret;
    await must(
      `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "18080", targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERROR_FIELDS} } }`,
      { i: this.instanceId },
    );
    // short presence periods, so the killed replica's agent connection is seen gone in seconds
    this.replicas = await Promise.all([0, 1].map(() => this.startReplica()));
    await this.startAgent();
  }

  /** Starts one more replica on the database. */
  async startReplica(): Promise<ControllerProcess> {
    const c = await spawnController(['--database-url', this.database.url, '--agent-heartbeat-ms', '250', '--agent-offline-after-ms', '2000']);
    this.everything.push(c);
    return c;
  }

  /** (Re)starts the agent with the replicas' URLs in order and waits until it has applied the desired state. */
  async startAgent(): Promise<AgentProcess> {
    await this.agent?.stop();
    this.agent = spawnAgent(
      linuxAgentArgs({
        controllers: this.replicas.map((r) => r.url).join(','),
        hostId: this.hostId,
        hostNetns: this.host.name,
        namespacePrefix: `${this.lab.prefix}-vm`,
        stateDir: this.stateDir,
      }),
      this.token,
    );
    await this.converged(this.replicas[0]!.url);
    return this.agent;
  }

  /** GraphQL through one replica; throws on errors. */
  async api<T = any>(url: string, query: string, variables?: Record<string, unknown>): Promise<T> {
    const r = await post(url, this.secret, query, variables);
    if (r.body.errors) throw new Error(JSON.stringify(r.body.errors));
    return r.body.data as T;
  }

  /** The host's agent as `url`'s replica sees it. */
  async hostAgent(url: string): Promise<{ desiredRevision: number; agent: { online: boolean; appliedRevision: number | null; lastError: string | null } }> {
    return (await this.api(url, `query($h: ID!) { host(id: $h) { desiredRevision agent { online appliedRevision lastError } } }`, { h: this.hostId })).host;
  }

  /** Waits until `url`'s replica sees the agent online with the newest revision applied. */
  async converged(url: string, ms = 60_000): Promise<void> {
    for (const end = Date.now() + ms; ;) {
      const h = await this.hostAgent(url).catch(() => undefined);
      if (h?.agent.online && h.agent.appliedRevision === h.desiredRevision) return;
      if (Date.now() > end)
        throw new Error(`the agent did not converge in ${ms} ms (${JSON.stringify(h)}); agent output:\n${this.agent?.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Port forwards by status (pending, applied, failed), read from the database. */
  async statuses(): Promise<Record<string, number>> {
    const rows = (await this.store.db.execute(sql`select status, count(*)::int as n from port_forwards group by status`)) as unknown as {
      status: string;
      n: number;
    }[];
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }

  /** What the client gets through `port` of the host's public address. */
  through(port: number, timeoutMs = 800): Promise<string> {
    return tcpOutcome(this.client, PUBLIC_ADDRESS, port, timeoutMs);
  }

  /**
   * SIGKILLs the replica the agent is on (the first of `replicas`) and measures, from the kill, when
   * the agent says it is connected to the other, and when the other sees it online with the
   * newest revision applied. The killed replica is replaced by a fresh one at the end of the list.
   */
  async failover(): Promise<{ connectedMs: number; onlineMs: number; from: string; to: string }> {
    const [from, to] = this.replicas as [ControllerProcess, ControllerProcess];
    const agent = this.agent!;
    const seen = agent.output().length;
    const connected = (async () => {
      for (const end = performance.now() + 30_000; performance.now() < end;) {
        const m = /connected to the controller \{"url":"([^"]+)"\}/.exec(agent.output().slice(seen));
        if (m) return { url: m[1]!, at: performance.now() };
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error(`the agent did not connect again within 30 s; its output:\n${agent.output().slice(-3000)}`);
    })();
    const killed = performance.now();
    await killController(from);
    const { url, at } = await connected;
    await this.converged(to.url, 30_000);
    const online = performance.now();
    this.replicas = [to, await this.startReplica()];
    return { connectedMs: at - killed, onlineMs: online - killed, from: from.url, to: url };
  }

  /** Stops the agent and the replicas (by PID), removes the database, the namespaces and the state directory. */
  async close(): Promise<void> {
    await this.agent?.stop('SIGKILL');
    for (const c of this.everything) await killController(c);
    for (const s of this.servers) s.stop();
    await this.store?.close();
    await this.database?.drop();
    await this.lab.cleanup();
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}
