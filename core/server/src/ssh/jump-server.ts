/**
 * The controller's SSH jump server (`ssh -J gatehouse@controller:2222 root@vm1`): public-key
 * authentication only, with the keys users added (`addSshKey`); `direct-tcpip` only to an instance
 * the user owns (its name, `name.host`, or one of its addresses, resolved among that user's
 * instances), only to a port the host's agent allows (22 by default), through the tunnel of the
 * host's agent. A shell or a command is answered with a message saying what this server is for;
 * every other request (remote or unix-socket forwarding, agent or X11 forwarding) is refused.
 * Each session is recorded (user, key fingerprint, instance, address, start, end, bytes); failed
 * authentications are limited per source address.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';
import type { AuthContext, Connection, ServerChannel } from 'ssh2';
import type { Logger } from '../support/logger.js';
import type { SshAccessService } from '../services/ssh-access-service.js';
import { SshTargetError } from '../services/ssh-access-service.js';
import { sshFingerprint, type SshKeyService } from '../services/ssh-key-service.js';
import { TunnelError, type TunnelBroker } from '../tunnel/tunnel-broker.js';
import type { InternalLogins } from './internal-logins.js';
import type { SshTarget } from '../services/ssh-access-service.js';
import { generateEd25519KeyPair } from './ed25519.js';

/** Options of the jump server. */
export interface JumpServerOptions {
  /** Default 2222; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The host's private key (OpenSSH format); generated there on first start. */
  hostKeyPath: string;
  /** Failed authentications one source address may make per window before it is refused (default 20). */
  maxAuthFailures?: number;
  /** The window of `maxAuthFailures` (default 60 s). */
  authFailureWindowMs?: number;
}

/** What the jump server uses. */
export interface JumpServerDeps {
  keys: SshKeyService;
  access: SshAccessService;
  tunnels: TunnelBroker;
  logger: Logger;
  /** The web terminals' one-time logins with the controller's internal key; absent: none accepted. */
  internal?: InternalLogins;
}

/** Default port of the jump server. */
export const DEFAULT_SSH_PORT = 2222;

/** What a shell or command on the jump server gets told. */
const NOT_A_SHELL =
  'This is the Gatehouse SSH jump server: it opens no shell and runs no command.\r\nConnect to one of your instances through it: ssh -J <user>@<controller> root@<instance name, name.host or address>\r\n';

/** Failed authentications per source address in a sliding window. */
class AuthFailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
  ) {}

  /** Whether the address used up its failures. */
  blocked(address: string): boolean {
    return this.recent(address).length >= this.max;
  }

  /** Counts one failure. */
  fail(address: string): void {
    const list = this.recent(address);
    list.push(Date.now());
    this.failures.set(address, list);
    // forget quiet addresses now and then, so the map stays small
    if (this.failures.size > 10_000) for (const key of this.failures.keys()) if (this.recent(key).length === 0) this.failures.delete(key);
  }

  private recent(address: string): number[] {
    const since = Date.now() - this.windowMs;
    const list = (this.failures.get(address) ?? []).filter((t) => t > since);
    if (list.length === 0) this.failures.delete(address);
    else this.failures.set(address, list);
    return list;
  }
}

/** Reads the host key, or generates and stores one (ed25519, mode 0600). */
export function loadOrCreateHostKey(path: string): { privateKey: string; publicKey: string; fingerprint: string; created: boolean } {
  let created = false;
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(path, generateEd25519KeyPair().private, { mode: 0o600, flag: 'wx' });
    created = true;
  }
  chmodSync(path, 0o600);
  const privateKey = readFileSync(path, 'utf8');
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed))
    throw new Error(`SSH host key ${path} cannot be read: ${parsed instanceof Error ? parsed.message : 'several keys'}`);
  return { privateKey, publicKey: `${parsed.type} ${parsed.getPublicSSH().toString('base64')}`, fingerprint: sshFingerprint(parsed.getPublicSSH()), created };
}

/** Who authenticated on a connection. */
interface Authenticated {
  userId: string;
  userName: string;
  fingerprint: string;
  /** A web terminal's login: the one address it may reach. */
  pinned?: SshTarget;
}

/** What the sessions of web terminals record as their key. */
export const WEB_TERMINAL_KEY = 'web-terminal';

/** A running jump server. */
export interface JumpServer {
  readonly port: number;
  /** The host key's SHA256 fingerprint. */
  readonly fingerprint: string;
  /** The host's public key, `type base64` (what clients of this controller pin). */
  readonly publicKey: string;
  close(): Promise<void>;
}

/** Starts the jump server. */
export async function startJumpServer(deps: JumpServerDeps, options: JumpServerOptions): Promise<JumpServer> {
  const hostKey = loadOrCreateHostKey(options.hostKeyPath);
  if (hostKey.created) deps.logger.info(`generated the SSH jump server's host key ${options.hostKeyPath}`);
  const limiter = new AuthFailureLimiter(options.maxAuthFailures ?? 20, options.authFailureWindowMs ?? 60_000);
  const clients = new Set<Connection>();
  const server = new ssh2.Server({ hostKeys: [hostKey.privateKey], ident: 'Gatehouse', keepaliveInterval: 15_000, keepaliveCountMax: 4 }, (client, info) => {
    const source = `${info.ip}:${info.port}`;
    if (limiter.blocked(info.ip)) {
      deps.logger.warn(`SSH: refused ${source}: too many failed authentications`);
      client.end();
      return;
    }
    clients.add(client);
    // interactive sessions: every keystroke's packet goes out at once
    (client as Connection & { setNoDelay(noDelay: boolean): void }).setNoDelay(true); // in ssh2, missing from its types
    client.on('close', () => clients.delete(client));
    client.on('error', (err) => deps.logger.warn(`SSH: connection from ${source}: ${err.message}`));
    let user: Authenticated | undefined;
    client.on('authentication', (ctx) => {
      void authenticate(deps, ctx).then(
        (who) => {
          if (who === 'query') return;
          if (who) {
            user = who;
            ctx.accept();
            return;
          }
          // "none" is how clients ask which methods exist: not a failure
          if (ctx.method !== 'none') {
            limiter.fail(info.ip);
            if (limiter.blocked(info.ip)) {
              deps.logger.warn(`SSH: ${source} made too many failed authentications; disconnecting`);
              client.end();
              return;
            }
          }
          ctx.reject(['publickey']);
        },
        (err: unknown) => {
          deps.logger.error(`SSH: authentication of ${source} failed unexpectedly: ${(err as Error).message}`);
          ctx.reject(['publickey']);
        },
      );
    });
    client.on('ready', () => {
      const who = user!;
      const refuseNext = channelRefusals(client);
      client.on('tcpip', (accept, reject, dest) => {
        void forward(deps, who, source, dest.destIP, dest.destPort, accept, (why) => {
          refuseNext(why);
          reject();
        });
      });
      client.on('session', (accept) => {
        const session = accept();
        session.on('pty', (ok) => ok?.());
        session.on('env', (ok) => ok?.());
        session.on('window-change', (ok) => ok?.());
        const explain = (open: () => ServerChannel) => {
          const channel = open();
          channel.stderr.write(NOT_A_SHELL);
          channel.exit(1);
          channel.end();
        };
        session.on('shell', (ok) => explain(ok));
        session.on('exec', (ok) => explain(ok));
        session.on('subsystem', (ok) => explain(ok));
      });
      client.on('openssh.streamlocal', (_accept, reject) => {
        refuseNext('unix socket forwarding is not offered by this jump server');
        reject();
      });
      client.on('request', (_accept, reject, name) => {
        deps.logger.info(`SSH: refused ${name} request of ${who.userName}`);
        reject?.();
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_SSH_PORT, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  deps.logger.info(`SSH jump server listening on ${options.host ?? '127.0.0.1'}:${port}, host key ${hostKey.fingerprint}`);
  return {
    port,
    fingerprint: hostKey.fingerprint,
    publicKey: hostKey.publicKey,
    close: async () => {
      for (const c of clients) c.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Public-key authentication: the key must be one a user added; with a signature, it must verify.
 * Resolves the user, 'query' after answering a key query itself, or undefined (refused).
 */
async function authenticate(deps: JumpServerDeps, ctx: AuthContext): Promise<Authenticated | 'query' | undefined> {
  if (ctx.method !== 'publickey') return undefined;
  const fingerprint = sshFingerprint(ctx.key.data);
  if (deps.internal && fingerprint === deps.internal.fingerprint) return authenticateInternal(deps.internal, ctx);
  const found = await deps.keys.byFingerprint(fingerprint);
  if (!found || found.key.algorithm !== ctx.key.algo.replace(/^rsa-sha2-(256|512)$/, 'ssh-rsa')) return undefined;
  if (!ctx.signature) {
    ctx.accept(); // "this key would do": the client signs next
    return 'query';
  }
  const parsed = ssh2.utils.parseKey(found.key.publicKey);
  if (parsed instanceof Error || Array.isArray(parsed)) return undefined;
  if (parsed.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return undefined;
  await deps.keys.touch(found.key.id);
  return { userId: found.key.userId, userName: found.userName, fingerprint };
}

/** A web terminal's login: the controller's internal key with a registered one-time name. */
function authenticateInternal(internal: InternalLogins, ctx: AuthContext & { method: 'publickey' }): Authenticated | 'query' | undefined {
  if (!internal.has(ctx.username)) return undefined;
  if (!ctx.signature) {
    ctx.accept();
    return 'query';
  }
  const parsed = ssh2.utils.parseKey(internal.publicKey);
  if (parsed instanceof Error || Array.isArray(parsed) || parsed.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return undefined;
  const login = internal.take(ctx.username);
  return login && { userId: login.userId, userName: login.userName, fingerprint: WEB_TERMINAL_KEY, pinned: login.target };
}

/**
 * ssh2 refuses channels with an empty description; OpenSSH prints the description ("channel 0:
 * open failed: connect failed: <why>"), so the next refusal of this connection carries `why`.
 */
function channelRefusals(client: Connection): (why: string) => void {
  let next = '';
  const protocol = (client as unknown as { _protocol?: { channelOpenFail?: (recipient: number, reason: number, description?: string) => void } })._protocol;
  const original = protocol?.channelOpenFail?.bind(protocol);
  if (protocol && original) {
    protocol.channelOpenFail = (recipient, reason, description) => {
      original(recipient, reason, description || next);
      next = '';
    };
  }
  return (why) => {
    next = why.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 400);
  };
}

/** Opens a `direct-tcpip` channel to an instance of the user through its host's agent, and records the session. */
async function forward(
  deps: JumpServerDeps,
  user: Authenticated,
  source: string,
  destination: string,
  port: number,
  accept: () => ServerChannel,
  refuse: (why: string) => void,
): Promise<void> {
  const shown = JSON.stringify(destination.slice(0, 80));
  let target;
  try {
    if (user.pinned && destination.replace(/^\[|\]$/g, '') !== user.pinned.address) throw new SshTargetError(`this login reaches ${user.pinned.address} only`);
    target = user.pinned ?? (await deps.access.resolve(user.userId, destination));
  } catch (err) {
    if (!(err instanceof SshTargetError)) deps.logger.error(`SSH: resolving ${shown} for ${user.userName} failed: ${(err as Error).message}`);
    deps.logger.info(`SSH: refused ${user.userName} (${user.fingerprint}) from ${source} to ${shown}:${port}: ${(err as Error).message}`);
    return refuse(err instanceof SshTargetError ? err.message : 'the destination could not be resolved');
  }
  const allowed = deps.tunnels.allowedPorts(target.hostId) ?? [];
  if (!allowed.includes(port)) {
    const why =
      allowed.length === 0
        ? `the agent of host ${target.hostName} is not connected`
        : `port ${port} of ${target.instanceName}.${target.hostName} is not open to SSH through the controller (allowed: ${allowed.join(', ')})`;
    deps.logger.info(`SSH: refused ${user.userName} to ${target.instanceName}.${target.hostName}:${port}: ${why}`);
    return refuse(why);
  }
  let stream;
  try {
    stream = await deps.tunnels.open(target.hostId, target.address, port);
  } catch (err) {
    const why = err instanceof TunnelError ? err.message : 'the tunnel could not be opened';
    deps.logger.warn(`SSH: tunnel for ${user.userName} to ${target.address}:${port} failed: ${(err as Error).message}`);
    return refuse(why);
  }
  const sessionId = await deps.access.started({
    userId: user.userId,
    keyFingerprint: user.fingerprint,
    instanceId: target.instanceId,
    targetAddress: target.address,
    targetPort: port,
    sourceAddress: source,
  });
  const channel = accept();
  let toInstance = 0;
  let fromInstance = 0;
  let reason = 'closed';
  channel.on('data', (chunk: Buffer) => (toInstance += chunk.length));
  stream.on('data', (chunk: Buffer) => (fromInstance += chunk.length));
  stream.on('error', (err) => (reason = `tunnel: ${err.message}`));
  channel.on('error', (err: Error) => (reason = `channel: ${err.message}`));
  channel.pipe(stream).pipe(channel);
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    stream.destroy();
    channel.destroy();
    void deps.access.ended(sessionId, { bytesToInstance: toInstance, bytesFromInstance: fromInstance, reason }).catch((err: unknown) => {
      deps.logger.error(`SSH: recording the end of session ${sessionId} failed: ${(err as Error).message}`);
    });
  };
  stream.once('close', end);
  channel.once('close', end);
  deps.logger.info(`SSH: ${user.userName} (${user.fingerprint}) from ${source} to ${target.instanceName}.${target.hostName} ${target.address}:${port}`);
}
