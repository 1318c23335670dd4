/**
 * The driver base's reuse of forward results between applies (`resultsReused`): the results of the
 * forwards a patched document shares with the last one are the last ones, the others are made
 * anew — and together they equal the results made from scratch. No root needed.
 */
import type { DesiredPortForward, ObjectResult } from '@gatehouse/sdk';
import { expect, it } from 'vitest';
import { resultsReused } from '../src/driver-base.js';

const forward = (n: number): DesiredPortForward => ({
  id: `f${n}`,
  protocol: 'tcp',
  hostAddress: null,
  hostPorts: { start: 1000 + n, end: 1000 + n },
  targetAddress: '10.0.0.5',
  targetPorts: { start: 80, end: 80 },
  sourceCidrs: [],
});

it('reuses the results of the shared forwards at either end and makes the others', () => {
  const made: string[] = [];
  const make = (f: DesiredPortForward): ObjectResult => {
    made.push(f.id);
    return { objectType: 'port_forward', objectId: f.id, status: 'applied' };
  };
  const before = Array.from({ length: 10 }, (_, n) => forward(n));
  const beforeResults = before.map(make);
  made.length = 0;
  const cases: [string, DesiredPortForward[], string[]][] = [
    ['unchanged', [...before], []],
    ['added in the middle', [...before.slice(0, 4), forward(40), ...before.slice(4)], ['f40']],
    ['removed', [...before.slice(0, 3), ...before.slice(4)], []],
    ['edited', [...before.slice(0, 6), { ...before[6]! }, ...before.slice(7)], ['f6']],
    ['added at the end', [...before, forward(50)], ['f50']],
    ['all new objects', before.map((f) => ({ ...f })), before.map((f) => f.id)],
    ['none', [], []],
  ];
  for (const [what, forwards, remade] of cases) {
    made.length = 0;
    const results = resultsReused(before, beforeResults, forwards, make);
    expect({ what, ids: results.map((r) => r.objectId), made }).toEqual({ what, ids: forwards.map((f) => f.id), made: remade });
    // the shared forwards' results are the very objects of the last apply
    for (const [i, f] of forwards.entries()) if (before.includes(f)) expect(results[i]).toBe(beforeResults[before.indexOf(f)]);
  }
});
