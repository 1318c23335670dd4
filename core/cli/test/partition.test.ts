/**
 * A network partition, with real processes in namespaces of the test's own: the host agent is cut
 * off from its controller (nftables in the host's namespace drops every packet between them: no
 * close, no reset) for longer than every keep-alive and presence timeout (25 s by default;
 * GATEHOUSE_PARTITION_MS=300000 runs the five minutes, the effect is the same). Meanwhile
 * the host keeps working: the forward passes traffic, the agent's table deleted by hand is
 * repaired without the controller, a new instance appears on the host, and the controller takes
 * ten changes. When the cut heals the agent reconnects by itself, reports the drift it repaired and
 * the instance it found, and applies the controller's ten revisions as one document in one apply.
 */
import { labAvailable } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REQUIRE_SYSTEM } from '@gatehouse/server/testing';
import { PartitionLab } from './support/partition-lab.js';

const available = await labAvailable();
const CUT_MS = Number(process.env.GATEHOUSE_PARTITION_MS ?? 25_000);
const CHANGES = 10;

describe.skipIf(!available && !REQUIRE_SYSTEM)('a host agent cut off from its controller', () => {
  const lab = new PartitionLab();

  beforeAll(() => lab.open(), 180_000);
  afterAll(() => lab.close(), 60_000);

  it('keeps the host working through the cut, reconnects by itself, reports what changed and applies what changed in one go', async () => {
    expect(await lab.through(18080)).toBe('got:hello from vm1');
    const before = await lab.hostAgent();
    expect(before.agent).toMatchObject({ online: true, lastError: null });

    await lab.cut();
    const cutAt = performance.now();
    const seen = lab.agent.output().length;
    // the controller changes meanwhile, the agent cannot hear of it
    const ports = Array.from({ length: CHANGES }, (_, i) => 18082 + i);
    for (const port of ports) await lab.forward(port);
    const { desiredRevision } = await lab.hostAgent();
    expect(desiredRevision).toBe(before.desiredRevision + CHANGES);
    // the host keeps working, and repairs itself: the agent's table deleted by hand comes back
    expect(await lab.through(18080)).toBe('got:hello from vm1');
    await lab.dropAgentTable();
    let repaired = false;
    for (const end = Date.now() + 10_000; !repaired && Date.now() < end;) repaired = (await lab.through(18080, 300)) === 'got:hello from vm1';
    expect(repaired, `the forward came back without the controller; agent output:\n${lab.agent.output().slice(seen)}`).toBe(true);
    const vm2 = await lab.newInstance('vm2');
    // the agent notices the dead connection on its own (keep-alive without an answer)
    await lab.agent.waitFor(/no answer from the controller for \d+ ms after a keep-alive ping; reconnecting/, 30_000);
    for (let left = CUT_MS - (performance.now() - cutAt); left > 0; left = CUT_MS - (performance.now() - cutAt)) {
      await new Promise((r) => setTimeout(r, Math.min(left, 5000)));
      expect(await lab.through(18080)).toBe('got:hello from vm1'); // the whole time
    }
    for (const port of ports) expect(await lab.through(port, 300)).not.toMatch(/^got:/);
    const beforeHeal = lab.agent.output().length;

    await lab.heal();
    const healed = performance.now();
    const { at: reconnected } = await lab.agent.waitFor(/connected to the controller/, 60_000, beforeHeal);
    await lab.converged(60_000);
    const convergedAt = performance.now();
    for (const port of ports) expect(await lab.through(port)).toBe('got:hello from vm1');

    // the ten revisions of the cut in one apply of the newest, not one per revision (a later
    // revision is the controller's answer to the instance the agent reported: it registers it)
    const afterHeal = lab.agent.output().slice(beforeHeal);
    const applies = [...afterHeal.matchAll(/applying revision (\d+) \{"repair":(true|false)/g)].map((m) => Number(m[1]));
    expect(applies.filter((r) => r <= desiredRevision)).toEqual([desiredRevision]);
    expect(applies[0]).toBe(desiredRevision);
    // what changed meanwhile reached the controller: the repair and the new instance
    const after = await lab.hostAgent();
    expect(after.agent.online).toBe(true);
    expect(after.agent.driftRepairs).toBeGreaterThan(before.agent.driftRepairs);
    expect(after.agent.discoveredInstances.map((i) => i.externalId)).toContain(vm2.name);
    expect(after.agent.lastError).toBeNull();
    console.log(
      `[partition] cut ${Math.round(healed - cutAt)} ms; after the heal the agent reconnected in ${Math.round(reconnected - healed)} ms and had applied the ${CHANGES} revisions made meanwhile (one apply, revision ${desiredRevision}) in ${Math.round(convergedAt - healed)} ms; applies after the heal: revisions ${applies.join(', ')}`,
    );
  }, 600_000);
});
