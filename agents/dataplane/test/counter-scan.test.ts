/**
 * `scanCounterSet` reads a forward counter set's listing with a regular expression instead of
 * parsing it: the same counters as a parse, for nft 1.0.6's spelling and (by parsing) any other.
 */
import { describe, expect, it } from 'vitest';
import { scanCounterSet } from '../src/observe.js';

const A = 'f1000000-0000-4000-8000-000000000001';
const B = 'f1000000-0000-4000-8000-000000000002';
const hex = (id: string) => id.replace(/-/g, '');
const set = {
  family: 'inet',
  name: 'fwd4_ctr',
  table: 'gatehouse',
  type: ['ipv4_addr', 'inet_proto', 'inet_service'],
  handle: 7,
  stmt: [{ counter: null }],
  elem: [
    { elem: { val: { concat: ['198.51.100.1', 'tcp', 10022] }, counter: { packets: 3, bytes: 180 }, comment: `fwd_${hex(A)}` } },
    { elem: { val: { concat: ['198.51.100.1', 'tcp', 10023] }, counter: { packets: 5, bytes: 300 }, comment: `fwd_${hex(B)}` } },
    { elem: { val: { concat: ['198.51.100.1', 'udp', 10023] }, counter: { packets: 2, bytes: 100 }, comment: `fwd_${hex(B)}` } },
  ],
};
// as nft 1.0.6 prints it: jansson's default separators ", " and ": "
const spaced = (value: unknown) => JSON.stringify(value).replace(/([,:])(?=["{[\d-])/g, '$1 ');

describe('scanCounterSet', () => {
  it('sums the elements of each forward from nft 1.0.6 output, and keeps the set handle', () => {
    const text = spaced({ nftables: [{ metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } }, { set }] });
    expect(text).toContain('"counter": {"packets": 3, "bytes": 180}, "comment": "fwd_');
    const scanned = scanCounterSet(text);
    expect(scanned).toMatchObject({ handle: '7', parsed: false });
    expect(Object.fromEntries(scanned.forwards)).toEqual({ [A]: { packets: 3, bytes: 180 }, [B]: { packets: 7, bytes: 400 } });
    expect(scanned.ids.get(hex(A))).toBe(A);
    // ids already known are taken as they are (no conversion), and collected into the given map
    const ids = new Map<string, string>();
    const again = scanCounterSet(text, new Map([[hex(A), 'known-a']]), ids);
    expect([...again.forwards.keys()].sort()).toEqual([B, 'known-a']);
    expect(ids.get(hex(A))).toBe('known-a');
  });

  it('parses what it does not recognise: compact JSON, elements without a comment, an empty set', () => {
    const foreign = { ...set, elem: [...set.elem, { elem: { val: { concat: ['198.51.100.9', 'tcp', 1] }, counter: { packets: 9, bytes: 9 } } }] };
    for (const text of [JSON.stringify({ nftables: [{ metainfo: {} }, { set }] }), spaced({ nftables: [{ metainfo: {} }, { set: foreign }] })]) {
      const scanned = scanCounterSet(text);
      expect(scanned).toMatchObject({ handle: '7', parsed: true });
      expect(Object.fromEntries(scanned.forwards)).toEqual({ [A]: { packets: 3, bytes: 180 }, [B]: { packets: 7, bytes: 400 } });
    }
    const empty = scanCounterSet(spaced({ nftables: [{ metainfo: {} }, { set: { ...set, elem: undefined, handle: 9 } }] }));
    expect(empty).toMatchObject({ handle: '9' });
    expect(empty.forwards.size).toBe(0);
  });
});
