import { randomFillSync } from 'node:crypto';

/** Random bytes are drawn for this many ids at once: one `randomBytes(16)` per id allocated ~1 KB (60 MB for a 50,000-row import). */
const POOLED_IDS = 256;
const pool = Buffer.alloc(16 * POOLED_IDS);
let pooled = POOLED_IDS;

/**
 * A UUIDv7: time-ordered, so ordering by id is creation order and keyset pagination on the
 * primary key lists objects oldest first.
 */
export function newId(now: number = Date.now()): string {
  if (pooled === POOLED_IDS) {
    randomFillSync(pool);
    pooled = 0;
  }
  const o = 16 * pooled++;
  // 48 bits of milliseconds, big-endian
  let ms = now;
  for (let i = 5; i >= 0; i--) {
    pool[o + i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  pool[o + 6] = (pool[o + 6]! & 0x0f) | 0x70;
  pool[o + 8] = (pool[o + 8]! & 0x3f) | 0x80;
  const hex = pool.toString('hex', o, o + 16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether the text is a lower-case UUID as Gatehouse hands them out. */
export function isId(text: string): boolean {
  return UUID.test(text);
}
