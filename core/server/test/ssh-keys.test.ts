/**
 * Generated ed25519 key pairs are always readable: ssh2 1.17's generator writes about one pair in
 * 200 with a 31-byte public key, which made the jump server's host key, the web terminal's internal
 * key (a failed controller start) and test keys unreadable now and then.
 */
import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../src/ssh/ed25519.js';
import { parsePublicKey } from '../src/services/ssh-key-service.js';

describe('generateEd25519KeyPair', () => {
  it('gives 3,000 pairs whose public keys all parse as 32-byte ed25519 keys', () => {
    const refused: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const pair = generateEd25519KeyPair();
      try {
        parsePublicKey('publicKey', pair.public);
      } catch (err) {
        refused.push(`${(err as Error).message}`);
      }
    }
    expect(refused).toEqual([]);
  });
});
