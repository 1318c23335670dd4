/**
 * Two controller replicas on one PostgreSQL, a host agent given both URLs (`--controller A,B`),
 * real processes and a lab host namespace: the replica the agent is on is SIGKILLed while it
 * ingests the agent's status report for 5,000 imported forwards. The agent moves to the other
 * replica by itself, the forwards keep passing traffic throughout, and no object is left PENDING
 * (the report lost with the killed replica is made again on the new connection, whose first apply
 * reports every object). The move time is printed; bench/outage.ts measures it over five runs.
 */
import { labAvailable } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REQUIRE_SYSTEM, postgresReachable } from '@gatehouse/server/testing';
import { ReplicaLab } from './support/replica-lab.js';

const available = (await postgresReachable()) && (await labAvailable());
const ROWS = 5000;

describe.skipIf(!available && !REQUIRE_SYSTEM)('a controller replica SIGKILLed under its agent', () => {
  const lab = new ReplicaLab();

  beforeAll(() => lab.open(), 180_000);
  afterAll(() => lab.close(), 60_000);

  it('moves the agent to the other replica mid status ingestion, keeps traffic flowing, and leaves nothing PENDING', async () => {
    const [a, b] = lab.replicas as [(typeof lab.replicas)[0], (typeof lab.replicas)[0]];
    expect(lab.agent!.output()).toContain(`connected to the controller {"url":"${a.url.replace('http://', 'ws://')}"}`);
    expect(await lab.through(18080)).toBe('got:hello from vm1');
    // 5,000 forwards through replica B: the agent (on A) applies them and reports their statuses to A
    const csv = `protocol,host_port,vm_ip,vm_port\n${Array.from({ length: ROWS }, (_, i) => `tcp,${20_000 + i},${lab.address},8080`).join('\n')}\n`;
    const imported = await lab.api(
      b.url,
      `mutation($h: ID!, $csv: String!) { importPortForwards(input: { hostId: $h, csv: $csv }) { __typename ... on ImportPortForwardsPayload { result { created } } } }`,
      {
        h: lab.hostId,
        csv,
      },
    );
    expect(imported.importPortForwards.result.created).toBe(ROWS);
    const { desiredRevision } = await lab.hostAgent(b.url);
    await lab.agent!.waitFor(new RegExp(`applying revision ${desiredRevision}\\b`), 30_000);
    // the agent is applying them, its report to A not yet ingested: A dies now
    const before = await lab.statuses();
    const move = await lab.failover();
    const atKill = before.pending ?? 0;
    expect(atKill).toBeGreaterThan(0); // killed before it had ingested the report
    expect(new URL(move.to.replace('ws://', 'http://')).port).toBe(new URL(b.url).port);
    // the data plane never depended on the controller: the forwards pass traffic
    expect(await lab.through(18080)).toBe('got:hello from vm1');
    expect(await lab.through(20_000 + ROWS - 1)).toBe('got:hello from vm1');

    // every status ingested through B: none PENDING, all APPLIED
    let after: Record<string, number> = {};
    for (const end = Date.now() + 60_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      after = await lab.statuses();
      if (!after.pending) break;
    }
    console.log(
      `[replica-failover] replica SIGKILLed with ${atKill} of ${ROWS + 1} forwards PENDING; the agent was connected to the other ${Math.round(move.connectedMs)} ms after the kill, seen online there with the newest revision after ${Math.round(move.onlineMs)} ms; afterwards ${JSON.stringify(after)}`,
    );
    expect(after).toEqual({ applied: ROWS + 1 });
    const seen = await lab.hostAgent(b.url);
    expect(seen.agent).toMatchObject({ online: true, appliedRevision: seen.desiredRevision, lastError: null });
    // a change through the surviving replica reaches the agent
    const created = await lab.api(
      b.url,
      `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "18081", targetPort: "8080" }) { __typename } }`,
      { i: lab.instanceId },
    );
    expect(created.createPortForward.__typename).toBe('CreatePortForwardPayload');
    await lab.converged(b.url);
    expect(await lab.through(18081)).toBe('got:hello from vm1');
  }, 240_000);
});
