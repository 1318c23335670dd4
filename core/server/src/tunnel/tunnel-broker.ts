/**
 * The controller's side of the tunnel through host agents: `open(hostId, address, port)` asks the
 * host's agent (over its `hostTunnelRequests` subscription) for a stream, with a one-time ticket,
 * and resolves with a byte stream once the agent has connected to the target and dialled back to
 * `/agent-stream` (authenticated by its first message: the agent token of that host and the
 * ticket). One path for every target, also where the controller could route to it itself.
 *
 * The requests and the dial-back are served by the replica that asked: an agent's subscription is
 * held on one replica, and `open` only reaches agents subscribed to this one.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { TUNNEL_CLOSE, TUNNEL_STREAM_HIGH_WATER_MARK, coalesceTunnelWrites, type TunnelRequest, type TunnelStreamHello } from '@gatehouse/agent-protocol';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { Actor } from '../auth/actor.js';
import { LoggerToken } from '../di/tokens.js';
import { UserService } from '../services/user-service.js';
import { ForbiddenError, ValidationError } from '../support/errors.js';
import { newId } from '../support/ids.js';
import type { Logger } from '../support/logger.js';

/** Why a stream could not be opened; the message is for the person at the other end. */
export class TunnelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TunnelError';
  }
}

/** Most streams asked for or open per host at once (the agent has its own limit too). */
export const MAX_STREAMS_PER_HOST = 64;
/** How long an agent has to dial back after a request. */
export const TUNNEL_OPEN_TIMEOUT_MS = 15_000;
/** How long a dial-back may take to send its hello. */
const HELLO_TIMEOUT_MS = 5_000;
/** Most ports an agent may declare. */
const MAX_PORTS = 64;

interface AgentSubscription {
  ports: readonly number[];
  push: (request: TunnelRequest) => Promise<unknown>;
}

interface PendingStream {
  hostId: string;
  resolve: (stream: Duplex) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** Brokers tunnel streams between this controller and the agents subscribed to it. */
@injectable()
export class TunnelBroker {
  /** Per host, the agents' subscriptions, newest last (a reconnected agent's old one may linger). */
  private readonly agents = new Map<string, AgentSubscription[]>();
  private readonly pending = new Map<string, PendingStream>();
  /** Streams asked for or open, per host. */
  private readonly streams = new Map<string, number>();
  private readonly sockets = new Set<WebSocket>();
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });

  constructor(
    @inject(UserService) private readonly users: UserService,
    @inject(LoggerToken) private readonly logger: Logger,
  ) {}

  /**
   * The stream requests for a host, for its agent (the host's AGENT token only); `ports` are the
   * target ports that agent allows, which `allowedPorts` answers while it is subscribed.
   */
  requests(actor: Actor, hostId: string, ports: readonly number[]): AsyncIterable<TunnelRequest> {
    if (actor.scope !== 'agent' || actor.hostId !== hostId)
      throw new ForbiddenError(`hostTunnelRequests of host ${hostId} is for that host's AGENT token`, 'hostId', hostId);
    if (ports.length === 0 || ports.length > MAX_PORTS) throw new ValidationError('ports', ports, `must list 1 to ${MAX_PORTS} ports`);
    for (const port of ports) if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ValidationError('ports', port, 'is not a port (1-65535)');
    return new Repeater<TunnelRequest>(async (push, stop) => {
      const subscription: AgentSubscription = { ports: [...new Set(ports)], push };
      const list = this.agents.get(hostId) ?? [];
      list.push(subscription);
      this.agents.set(hostId, list);
      await stop;
      const rest = (this.agents.get(hostId) ?? []).filter((s) => s !== subscription);
      if (rest.length > 0) this.agents.set(hostId, rest);
      else this.agents.delete(hostId);
    });
  }

  /** The ports the host's agent allows streams to; undefined when its agent holds no subscription here. */
  allowedPorts(hostId: string): readonly number[] | undefined {
    return this.agents.get(hostId)?.at(-1)?.ports;
  }

  /** Asks the host's agent for a stream to `address:port`; rejects with a `TunnelError` saying why not. */
  async open(hostId: string, address: string, port: number, timeoutMs = TUNNEL_OPEN_TIMEOUT_MS): Promise<Duplex> {
    const agent = this.agents.get(hostId)?.at(-1);
    if (!agent) throw new TunnelError(`the agent of host ${hostId} is not connected`);
    if (!agent.ports.includes(port)) throw new TunnelError(`port ${port} is not open to tunnels on host ${hostId} (allowed: ${agent.ports.join(', ')})`);
    const open = this.streams.get(hostId) ?? 0;
    if (open >= MAX_STREAMS_PER_HOST) throw new TunnelError(`host ${hostId} has ${open} tunnel streams, its limit`);
    this.streams.set(hostId, open + 1);
    const ticket = randomBytes(32).toString('base64url');
    let stream: Duplex;
    try {
      stream = await new Promise<Duplex>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(ticket);
          reject(new TunnelError(`the agent of host ${hostId} did not open the stream to ${address}:${port} within ${timeoutMs} ms`));
        }, timeoutMs);
        this.pending.set(ticket, { hostId, resolve, reject, timer });
        agent.push({ ticket, address, port }).catch((err: unknown) => {
          clearTimeout(timer);
          this.pending.delete(ticket);
          reject(new TunnelError(`the agent of host ${hostId} could not be asked: ${(err as Error).message}`));
        });
      });
    } catch (err) {
      this.release(hostId);
      throw err;
    }
    stream.once('close', () => this.release(hostId));
    return stream;
  }

  /** Takes an HTTP upgrade on the stream path: the agent's dial-back. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(request, socket, head, (ws) => this.accept(ws, request.socket.remoteAddress ?? 'unknown address'));
  }

  /** Ends every stream and refuses the pending ones. */
  close(): void {
    for (const [ticket, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new TunnelError('the controller is stopping'));
      this.pending.delete(ticket);
    }
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
  }

  private release(hostId: string): void {
    const n = (this.streams.get(hostId) ?? 1) - 1;
    if (n > 0) this.streams.set(hostId, n);
    else this.streams.delete(hostId);
  }

  private accept(ws: WebSocket, from: string): void {
    this.sockets.add(ws);
    ws.once('close', () => this.sockets.delete(ws));
    const refuse = (why: string) => {
      this.logger.warn(`refused a tunnel stream from ${from}: ${why}`);
      ws.close(TUNNEL_CLOSE.refused, 'refused');
    };
    const timer = setTimeout(() => refuse(`no hello within ${HELLO_TIMEOUT_MS} ms`), HELLO_TIMEOUT_MS);
    ws.once('message', (data, isBinary) => {
      clearTimeout(timer);
      // nothing else arrives before the answer: the agent waits for it
      void this.greet(ws, data, isBinary, refuse);
    });
  }

  private async greet(ws: WebSocket, data: unknown, isBinary: boolean, refuse: (why: string) => void): Promise<void> {
    const hello = parseHello(data, isBinary);
    if (!hello) return refuse('the first message is not a stream hello');
    const pending = this.pending.get(hello.ticket);
    if (!pending) return refuse('unknown, used or expired ticket');
    this.pending.delete(hello.ticket); // one use, whatever follows
    const actor = await this.users.authenticate(hello.token, newId()).catch(() => undefined);
    clearTimeout(pending.timer);
    if (!actor || actor.scope !== 'agent' || actor.hostId !== pending.hostId) {
      pending.reject(new TunnelError(`the dial-back for host ${pending.hostId} was not made with its agent token`));
      return refuse(`the token is not host ${pending.hostId}'s agent token`);
    }
    if (hello.error !== undefined) {
      pending.reject(new TunnelError(`the agent of host ${pending.hostId} refused: ${hello.error}`));
      ws.close(TUNNEL_CLOSE.done);
      return;
    }
    if (ws.readyState !== ws.OPEN) return pending.reject(new TunnelError(`the agent of host ${pending.hostId} hung up`));
    ws.send('ok');
    const stream = coalesceTunnelWrites(createWebSocketStream(ws, { highWaterMark: TUNNEL_STREAM_HIGH_WATER_MARK }), (data, done) =>
      ws.send(data, { binary: true }, done),
    );
    // the agent's side closed (the target hung up, the agent died): once read, the stream closes
    stream.once('end', () => stream.end());
    pending.resolve(stream);
  }
}

function parseHello(data: unknown, isBinary: boolean): TunnelStreamHello | undefined {
  if (isBinary || !Buffer.isBuffer(data) || data.length > 4096) return undefined;
  try {
    const hello = JSON.parse(data.toString('utf8')) as Partial<TunnelStreamHello>;
    if (typeof hello.token !== 'string' || typeof hello.ticket !== 'string') return undefined;
    if (hello.error !== undefined && typeof hello.error !== 'string') return undefined;
    return { token: hello.token, ticket: hello.ticket, ...(hello.error !== undefined ? { error: hello.error.slice(0, 500) } : {}) };
  } catch {
    return undefined;
  }
}
