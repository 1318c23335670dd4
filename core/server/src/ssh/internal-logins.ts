/**
 * How the controller's web terminals log in to its own jump server: with a key pair made when the
 * controller starts (kept in memory and in a private file for `ssh`, never reused across starts)
 * and a one-time login name registered for one terminal. The key alone opens nothing: the jump
 * server accepts it only with a registered name, once, and that login reaches one instance only.
 */
import { randomBytes } from 'node:crypto';
import ssh2 from 'ssh2';
import type { SshTarget } from '../services/ssh-access-service.js';
import { sshFingerprint } from '../services/ssh-key-service.js';
import { generateEd25519KeyPair } from './ed25519.js';

/** What a registered login may do: act for this user, towards this instance address only. */
export interface InternalLogin {
  userId: string;
  userName: string;
  target: SshTarget;
}

/** The controller's internal key and its pending one-time logins. */
export class InternalLogins {
  /** OpenSSH private key text, for `ssh -i`. */
  readonly privateKey: string;
  /** The public key, `ssh-ed25519 base64`. */
  readonly publicKey: string;
  /** SHA256 fingerprint of the public key. */
  readonly fingerprint: string;
  private readonly pending = new Map<string, InternalLogin>();

  constructor() {
    const pair = generateEd25519KeyPair();
    this.privateKey = pair.private;
    this.publicKey = pair.public;
    const parsed = ssh2.utils.parseKey(pair.public);
    if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('the internal SSH key could not be read back');
    this.fingerprint = sshFingerprint(parsed.getPublicSSH());
  }

  /** Registers a login; returns its one-time name (`gh-term-…`). */
  register(login: InternalLogin): string {
    const name = `gh-term-${randomBytes(18).toString('base64url')}`;
    this.pending.set(name, login);
    return name;
  }

  /** Whether a name is registered (the key query that precedes the signature). */
  has(name: string): boolean {
    return this.pending.has(name);
  }

  /** Takes a login once (after the signature verified). */
  take(name: string): InternalLogin | undefined {
    const login = this.pending.get(name);
    this.pending.delete(name);
    return login;
  }

  /** Drops a login that was never used (the terminal ended before its ssh logged in). */
  forget(name: string): void {
    this.pending.delete(name);
  }
}
