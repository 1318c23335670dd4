/** The audit log's before/after diff. */
import { describe, expect, it } from 'vitest';
import { diffJson, flatten } from '../src/audit/json-diff.js';

describe('diffJson', () => {
  it('lists changed, added and removed fields by dotted path, sorted', () => {
    const before = { hostPorts: { start: 8080, end: 8080 }, note: 'web', sourceCidrs: ['10.0.0.0/8'], status: 'APPLIED' };
    const after = { hostPorts: { start: 8080, end: 8081 }, note: 'web', sourceCidrs: [], priority: 5, status: 'APPLIED' };
    expect(diffJson(before, after)).toEqual([
      { path: 'hostPorts.end', before: '8080', after: '8081' },
      { path: 'priority', after: '5' },
      { path: 'sourceCidrs', after: '[]' },
      { path: 'sourceCidrs.0', before: '"10.0.0.0/8"' },
    ]);
  });

  it('shows a creation as all added and a deletion as all removed', () => {
    expect(diffJson(null, { a: 1, b: { c: 'x' } })).toEqual([
      { path: 'a', after: '1' },
      { path: 'b.c', after: '"x"' },
    ]);
    expect(diffJson({ a: 1 }, null)).toEqual([{ path: 'a', before: '1' }]);
    expect(diffJson({ a: 1 }, { a: 1 })).toEqual([]);
  });

  it('flattens nested arrays and objects, keeping empty ones and nulls as leaves', () => {
    expect([...flatten({ x: [{ y: null }], z: {} })]).toEqual([
      ['x.0.y', 'null'],
      ['z', '{}'],
    ]);
  });
});
