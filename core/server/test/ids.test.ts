/**
 * Ids are UUIDv7 text written from a pool of random bytes (support/ids.ts): lower-case, version 7,
 * RFC 4122 variant, unique, ordered by their millisecond (the text is now written digit by digit
 * into a buffer, see there).
 */
import { describe, expect, it } from 'vitest';
import { isId, newId } from '../src/support/ids.js';

describe('newId', () => {
  it('writes UUIDv7 text: version 7, variant 10, the millisecond first, unique across pool refills', () => {
    const start = 1_700_000_000_000;
    // 1,000 ids: several refills of the 256-id pool of random bytes
    const ids = Array.from({ length: 1_000 }, (_, i) => newId(start + Math.floor(i / 10)));
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(isId(id)).toBe(true);
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids[0]!.replace('-', '').slice(0, 12)).toBe(start.toString(16).padStart(12, '0'));
    expect(ids.at(-1)!.replace('-', '').slice(0, 12)).toBe((start + 99).toString(16).padStart(12, '0'));
    const millis = ids.map((id) => id.replace('-', '').slice(0, 12));
    expect([...millis].sort()).toEqual(millis);
  });
});
