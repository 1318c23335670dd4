import { randomFillSync } from 'node:crypto';

/** Random bytes are drawn for this many ids at once: one `randomBytes(16)` per id allocated ~1 KB (60 MB for a 50,000-row import). */
const POOLED_IDS = 256;
const pool = Buffer.alloc(16 * POOLED_IDS);
let pooled = POOLED_IDS;
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
/** Where an id's text is written. */
const text = Buffer.alloc(36);

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
  // the text is written into a buffer and read out as one flat string: joined from slices of the
  // hex it was a tree of 9 strings (370 bytes an id, not 56), kept as long as the id (the forwards
  // and audit entries of a 50,000-row import: 37 MB that every garbage collection walked)
  let t = 0;
  for (let b = o; b < o + 16; b++) {
    if (t === 8 || t === 13 || t === 18 || t === 23) text[t++] = 0x2d;
    text[t++] = HEX_DIGITS[pool[b]! >> 4]!;
    text[t++] = HEX_DIGITS[pool[b]! & 15]!;
  }
  return text.toString('latin1', 0, 36);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether the text is a lower-case UUID as Gatehouse hands them out. */
export function isId(text: string): boolean {
  return UUID.test(text);
}
