/**
 * Sign-in passwords, hashed with scrypt (node:crypto) in a self-describing format
 * `scrypt$N$r$p$salt$hash`, so the cost can be raised later without invalidating stored hashes.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { ValidationError } from '../support/errors.js';

/** scrypt cost: 2^15 × 8 × 1 uses 32 MiB and about 50–100 ms a hash here. */
const COST = { N: 2 ** 15, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
/** Password length limits (characters). */
export const PASSWORD_LENGTH = { min: 10, max: 200 } as const;

function derive(password: string, salt: Buffer, cost: { N: number; r: number; p: number }): Promise<Buffer> {
  const options: ScryptOptions = { ...cost, maxmem: 256 * cost.N * cost.r };
  return new Promise((resolve, reject) => scrypt(password.normalize('NFKC'), salt, KEY_BYTES, options, (err, key) => (err ? reject(err) : resolve(key))));
}

/** A password accepted as a new password, or a ValidationError naming `field`. */
export function validPassword(field: string, value: string): string {
  if (value.length < PASSWORD_LENGTH.min) throw new ValidationError(field, '(hidden)', `must be at least ${PASSWORD_LENGTH.min} characters long`);
  if (value.length > PASSWORD_LENGTH.max) throw new ValidationError(field, '(hidden)', `must be at most ${PASSWORD_LENGTH.max} characters long`);
  return value;
}

/** Hashes a password with a fresh 16-byte salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, COST);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

// compared against when the user does not exist, so a wrong name takes as long as a wrong password
let dummyHash: Promise<string> | undefined;

/** Whether `password` matches `stored` (a hash from hashPassword); a missing hash costs the same time and fails. */
export async function verifyPassword(password: string, stored: string | null | undefined): Promise<boolean> {
  const hash = stored ?? (await (dummyHash ??= hashPassword(randomBytes(16).toString('hex'))));
  const [scheme, n, r, p, salt, key] = hash.split('$');
  if (scheme !== 'scrypt' || !salt || !key) return false;
  const expected = Buffer.from(key, 'base64url');
  const actual = await derive(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
  return stored != null && actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** A random password for the first admin (16 characters of base64url). */
export function randomPassword(): string {
  return randomBytes(12).toString('base64url');
}
