/**
 * Editing a forward in place, end to end as root: a real controller process, the host agent with
 * the Linux plugin, and clients in a namespace connecting in loops through the forward while it is
 * edited through the public API (`updatePortForward`: target port, allow-list, note). Each edit
 * goes PENDING, then APPLIED when the agent reports it, and no connection is refused meanwhile;
 * then a host port move: the new port answers and the old one no longer does. Then NIC apply
 * status (`Nic.status`, `Nic.statusError`) as the agent reports it.
 */
import { NetnsLab, eventually, labAvailable, tcpConnectLoop, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostAgent } from '../src/index.js';
import { startLinuxLabHost } from './linux-lab.js';
import { gql, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const ERR = '... on Error { code message field value }';
const EDITS = 12;

describe.skipIf(!available && !REQUIRE_SYSTEM)('forward edits and NIC status end to end', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-edit-e2e-'));
  let controller: { proc: Proc; url: string };
  let admin: string;
  let host: LabNamespace;
  let client: LabNamespace;
  let instanceId: string;
  let agent: HostAgent | undefined;
  const servers: LabServer[] = [];
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const forward = async (id: string) =>
    (
      await api(`query ($id: ID!) { portForward(id: $id) { status statusError changedRevision hostPorts { start } targetPorts { start } sourceCidrs note } }`, {
        id,
      })
    ).portForward;
  const update = async (input: Record<string, unknown>) =>
    (
      await api(
        `mutation ($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { __typename ... on UpdatePortForwardPayload { portForward { status changedRevision } } ${ERR} } }`,
        { input },
      )
    ).updatePortForward;

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'first'), tcpServer(vm, 8081, 'second'));
    const l = await startLinuxLabHost({ lab, host, vm, dataDir, name: 'edit', subnet: '10.78.0', publicAddress: '198.51.100.1' });
    ({ controller, admin, instanceId, agent } = l);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    for (const s of servers) s.stop();
    await controller?.proc.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it(`refuses no connection during ${EDITS} edits through the API, each PENDING then APPLIED`, async () => {
    const created = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18090", targetPort: "8080", note: "web" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instanceId },
    );
    const id = created.createPortForward.portForward.id as string;
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18090), 20_000)).toBe('got:first');
    expect(await until(async () => (await forward(id)).status === 'APPLIED')).toBe(true);
    const versions = [
      { targetPort: '8081' },
      { sourceCidrs: ['198.51.100.0/24'], note: 'web, office only' },
      { targetPort: '8080', sourceCidrs: ['198.51.100.2', '203.0.113.0/24'] },
      { sourceCidrs: null, note: null },
    ];
    const loop = tcpConnectLoop(client, '198.51.100.1', 18090, 4);
    try {
      for (let i = 0; i < EDITS; i++) {
        const edited = await update({ portForwardId: id, ...versions[i % versions.length] });
        expect(edited, JSON.stringify(edited)).toMatchObject({ __typename: 'UpdatePortForwardPayload', portForward: { status: 'PENDING' } });
        const revision = edited.portForward.changedRevision as number;
        const applied = await until(async () => {
          const f = await forward(id);
          return f.status === 'APPLIED' && f.changedRevision === revision ? f : undefined;
        });
        expect(applied, `edit ${i} applied`).toBeTruthy();
      }
      const counts = await loop.stop();
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      console.log(`forward edits through the API: ${EDITS} edits, ${total} connections: ${JSON.stringify(counts)}`);
      expect(counts.refused ?? 0).toBe(0);
      expect(counts.timeout ?? 0).toBe(0);
      expect(Object.keys(counts).filter((k) => k.startsWith('error:'))).toEqual([]);
      expect(counts['got:first']).toBeGreaterThan(0);
      expect(counts['got:second']).toBeGreaterThan(0);
    } finally {
      loop.kill();
    }
    expect(await forward(id)).toMatchObject({ targetPorts: { start: 8080 }, sourceCidrs: [], note: '' });

    const moved = await update({ portForwardId: id, hostPort: '18091', targetPort: '8081' });
    expect(moved.__typename).toBe('UpdatePortForwardPayload');
    expect(await until(async () => (await forward(id)).status === 'APPLIED' && (await forward(id)).changedRevision === moved.portForward.changedRevision)).toBe(
      true,
    );
    expect(await tcpOutcome(client, '198.51.100.1', 18091)).toBe('got:second');
    expect(await tcpOutcome(client, '198.51.100.1', 18090)).toBe('refused');
  }, 180_000);

  it("shows each NIC's apply status as the agent reports it: APPLIED, FAILED with the driver's error, then APPLIED once it can be", async () => {
    const nicsOf = async (id: string) =>
      (await api(`query ($id: ID!) { instance(id: $id) { nics { status statusError } } }`, { id })).instance.nics as {
        status: string;
        statusError: string | null;
      }[];
    expect(await until(async () => (await nicsOf(instanceId))[0]!.status === 'APPLIED')).toBe(true);
    // an instance whose network namespace does not exist (yet): the Linux plugin cannot give it its NIC
    const ghostNetns = `${lab.prefix}-ghost`;
    const ghost = await api(
      `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "ghost", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id nics { status } } } ${ERR} } }`,
      { hostId: (await api(`{ hosts { edges { node { id name } } } }`)).hosts.edges.find((e: any) => e.node.name === 'edit-host').node.id, name: ghostNetns },
    );
    const ghostId = ghost.createInstance.instance.id as string;
    expect(ghost.createInstance.instance.nics[0].status).toBe('PENDING');
    const failed = await until(async () => {
      const [nic] = await nicsOf(ghostId);
      return nic!.status === 'FAILED' ? nic : undefined;
    }, 30_000);
    expect(failed).toMatchObject({ status: 'FAILED', statusError: expect.stringContaining(`network namespace ${ghostNetns} does not exist`) });
    // the namespace appears: the agent retries the transient failure and the NIC is APPLIED, its error gone
    await lab.namespace('ghost');
    const applied = await until(async () => {
      const [nic] = await nicsOf(ghostId);
      return nic!.status === 'APPLIED' ? nic : undefined;
    }, 60_000);
    expect(applied).toEqual({ status: 'APPLIED', statusError: null });
  }, 120_000);
});
