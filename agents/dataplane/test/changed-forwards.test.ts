/**
 * `changedForwards`, the forwards an incremental apply renders and diffs, against the definition:
 * a forward is in `before` when it went or its elements changed, in `after` when it came or its
 * elements changed — for random revisions made as a controller makes them (added, deleted,
 * edited, moved between instances; unchanged forwards shared with the previous document as a
 * patch shares them, or all copied as in a full document). No root needed.
 */
import type { DesiredPortForward, DesiredState } from '@gatehouse/sdk';
import { describe, expect, it } from 'vitest';
import { changedForwards } from '../src/render.js';

/** A small deterministic generator (mulberry32), so a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const forward = (n: number, port: number, target = 80): DesiredPortForward => ({
  id: `f${n}`,
  protocol: 'tcp',
  hostAddress: null,
  hostPorts: { start: port, end: port },
  targetAddress: '10.0.0.5',
  targetPorts: { start: target, end: target },
  sourceCidrs: [],
});

const stateOf = (lists: DesiredPortForward[][]): DesiredState => ({
  apiVersion: 1,
  hostId: 'h',
  hostName: 'h',
  revision: 1,
  publicAddresses: ['198.51.100.1'],
  instances: lists.map((portForwards, k) => ({
    id: `i${k}`,
    name: `vm${k}`,
    externalId: null,
    nics: [],
    firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards,
  })),
});

const elementsOf = (f: DesiredPortForward) => JSON.stringify([f.protocol, f.hostAddress, f.hostPorts, f.targetAddress, f.targetPorts.start]);

/** The definition: every forward of both documents by id. */
function expected(from: DesiredState, to: DesiredState): { before: string[]; after: string[] } {
  const all = (s: DesiredState) => new Map(s.instances.flatMap((i) => i.portForwards.map((f) => [f.id, f] as const)));
  const [a, b] = [all(from), all(to)];
  const before = [...a.values()].filter((f) => !b.has(f.id) || elementsOf(b.get(f.id)!) !== elementsOf(f)).map((f) => f.id);
  const after = [...b.values()].filter((f) => !a.has(f.id) || elementsOf(a.get(f.id)!) !== elementsOf(f)).map((f) => f.id);
  return { before: before.sort(), after: after.sort() };
}

describe('changedForwards', () => {
  it('finds exactly the forwards that came, went or changed, for random revisions', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const next = random(seed);
      const pick = (n: number) => Math.floor(next() * n);
      let serial = 0;
      const lists = Array.from({ length: 1 + pick(3) }, () =>
        Array.from({ length: pick(40) }, () => forward(serial++, 1000 + serial * 2)).sort((x, y) => x.hostPorts.start - y.hostPorts.start),
      );
      const changed = lists.map((l) => [...l]);
      for (let op = pick(6); op > 0; op--) {
        const list = changed[pick(changed.length)]!;
        const at = pick(list.length + 1);
        const kind = pick(4);
        if (kind === 0)
          list.splice(at, 0, forward(serial++, 1001 + pick(200) * 2)); // added
        else if (list.length === 0) continue;
        else if (kind === 1)
          list.splice(Math.min(at, list.length - 1), 1); // deleted
        else if (kind === 2)
          list[Math.min(at, list.length - 1)] = { ...list[Math.min(at, list.length - 1)]!, targetPorts: { start: 81, end: 81 } }; // edited
        else changed[pick(changed.length)]!.push(...list.splice(Math.min(at, list.length - 1), 1)); // moved to another instance (or the end)
      }
      for (const l of changed) l.sort((x, y) => x.hostPorts.start - y.hostPorts.start);
      const from = stateOf(lists);
      // as a patch makes it (unchanged forwards shared), and as a full document (everything copied)
      for (const to of [stateOf(changed), JSON.parse(JSON.stringify(stateOf(changed))) as DesiredState]) {
        const got = changedForwards(from, to)!;
        expect({ seed, before: got.before.map((f) => f.id).sort(), after: got.after.map((f) => f.id).sort() }).toEqual({ seed, ...expected(from, to) });
      }
    }
  });
});
