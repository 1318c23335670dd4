import ssh2 from 'ssh2';

/**
 * A new ed25519 key pair in OpenSSH format. ssh2 1.17's generator writes about one pair in 200 with
 * a 31-byte public key (a leading zero byte dropped: the length field reads `AAAAH`, not `AAAAI`),
 * which ssh2 itself and OpenSSH refuse to read; such a pair is drawn again.
 */
export function generateEd25519KeyPair(): { private: string; public: string } {
  for (let attempt = 0; attempt < 16; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519');
    const publicKey = ssh2.utils.parseKey(pair.public);
    const privateKey = ssh2.utils.parseKey(pair.private);
    if (!(publicKey instanceof Error) && !Array.isArray(publicKey) && !(privateKey instanceof Error) && !Array.isArray(privateKey)) return pair;
  }
  throw new Error('could not generate a readable ed25519 key pair in 16 attempts');
}
