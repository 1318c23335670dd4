/**
 * The agent's side of the SSH tunnel: streams the controller asks for (over the graphql-ws
 * connection, `hostTunnelRequests`) to an address of one of this host's instances. For each, the
 * agent connects to the target, dials a WebSocket back to the controller (`/agent-stream`,
 * authenticated in its first message with the agent token and the request's one-time ticket) and
 * pipes both ways.
 *
 * - Only to an address of an instance in the newest desired state, and only to the allowed ports
 *   (22 unless the host's agent is started with others); anything else is refused and the
 *   controller is told why.
 * - Back-pressure both ways: `createWebSocketStream` pauses the WebSocket while the target socket's
 *   buffer is full and waits for each WebSocket send to be written before taking more from the
 *   target. Both buffers hold `TUNNEL_STREAM_HIGH_WATER_MARK` bytes, and the chunks that queue
 *   behind a send go out as one message (`coalesceTunnelWrites`).
 * - A stream with no bytes either way for `idleMs` is closed; a close on either side closes the
 *   other; at most `maxStreams` at once; `closeAll` (the agent stopping) ends every stream.
 */
import { connect, isIP, type Socket } from 'node:net';
import {
  DEFAULT_TUNNEL_PORTS,
  TUNNEL_CLOSE,
  TUNNEL_STREAM_HIGH_WATER_MARK,
  TUNNEL_STREAM_PATH,
  coalesceTunnelWrites,
  type TunnelRequest,
  type TunnelStreamHello,
} from '@gatehouse/agent-protocol';
import type { DesiredState } from '@gatehouse/sdk';
import WebSocket, { createWebSocketStream } from 'ws';
import { websocketUrl, type AgentLogger, type ControllerConnection } from './controller.js';

/** Tunnel settings of a host agent. */
export interface TunnelOptions {
  /** The controller streams dial back to: the replica the agent is connected to (a function when that changes). */
  controllerUrl: string | (() => string);
  token: string;
  logger: AgentLogger;
  /** Target ports allowed (default 22 only). */
  ports?: readonly number[];
  /** Most streams open at once (default 64). */
  maxStreams?: number;
  /** A stream with no traffic for this long is closed (default 1 hour). */
  idleMs?: number;
  /** How long connecting to the target may take (default 10 s). */
  connectTimeoutMs?: number;
}

/** Default of `TunnelOptions.maxStreams`. */
export const DEFAULT_MAX_TUNNEL_STREAMS = 64;

/** The streams of one agent. */
export class TunnelStreams {
  private readonly streams = new Set<{ socket: Socket; ws?: WebSocket }>();
  private closed = false;

  constructor(
    private readonly options: TunnelOptions,
    /** The addresses of the instances in the newest desired state (canonical spelling). */
    private readonly instanceAddresses: () => ReadonlySet<string>,
  ) {}

  /** Where a stream dials back: the tunnel path of the replica that asked (the agent's current one). */
  private get streamUrl(): string {
    const given = this.options.controllerUrl;
    const url = new URL(websocketUrl(typeof given === 'string' ? given : given()));
    url.pathname = TUNNEL_STREAM_PATH;
    return url.toString();
  }

  /** The allowed target ports. */
  get ports(): readonly number[] {
    return this.options.ports ?? DEFAULT_TUNNEL_PORTS;
  }

  /** Streams open now. */
  get size(): number {
    return this.streams.size;
  }

  /** Why a request is refused, or undefined when it may go ahead. */
  refusal(request: TunnelRequest): string | undefined {
    if (this.closed) return 'the agent is stopping';
    if (!this.ports.includes(request.port)) return `port ${request.port} is not allowed by this host's agent (allowed: ${this.ports.join(', ')})`;
    if (!isIP(request.address) || !this.instanceAddresses().has(canonical(request.address)))
      return `${request.address} is not an address of an instance on this host`;
    if (this.streams.size >= (this.options.maxStreams ?? DEFAULT_MAX_TUNNEL_STREAMS))
      return `this host's agent has ${this.streams.size} streams open, its limit`;
    return undefined;
  }

  /** Opens the stream a request asks for, or tells the controller why not. */
  handle(request: TunnelRequest): void {
    const refused = this.refusal(request);
    if (refused) {
      this.options.logger.warn('refused a tunnel stream', { address: request.address, port: request.port, reason: refused });
      this.dialBack(request.ticket, refused);
      return;
    }
    // keystrokes go out at once (SSH is interactive), not after Nagle's wait
    const socket = connect({ host: request.address, port: request.port, noDelay: true });
    const stream: { socket: Socket; ws?: WebSocket } = { socket };
    this.streams.add(stream);
    const timer = setTimeout(
      () => socket.destroy(new Error(`connecting took over ${this.options.connectTimeoutMs ?? 10_000} ms`)),
      this.options.connectTimeoutMs ?? 10_000,
    );
    socket.once('close', () => {
      clearTimeout(timer);
      this.streams.delete(stream);
    });
    socket.once('error', (err) => {
      if (!stream.ws) this.dialBack(request.ticket, `connecting to ${request.address}:${request.port} failed: ${err.message}`);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      if (this.closed) return void socket.destroy();
      stream.ws = this.dialBack(request.ticket);
      this.pipe(socket, stream.ws, request);
    });
  }

  /** Ends every stream (the agent is stopping or was told to). */
  closeAll(): void {
    this.closed = true;
    for (const { socket, ws } of this.streams) {
      ws?.terminate();
      socket.destroy();
    }
    this.streams.clear();
  }

  /** Dials the controller and sends the hello; with `error`, the hello refuses the stream and the socket closes. */
  private dialBack(ticket: string, error?: string): WebSocket {
    const ws = new WebSocket(this.streamUrl, { perMessageDeflate: false, maxPayload: 1 << 20 });
    const hello: TunnelStreamHello = { token: this.options.token, ticket, ...(error ? { error } : {}) };
    ws.once('open', () => {
      ws.send(JSON.stringify(hello));
      if (error) ws.close(TUNNEL_CLOSE.refused, 'refused');
    });
    ws.on('error', (err) => this.options.logger.warn('tunnel stream connection to the controller failed', { error: err.message }));
    return ws;
  }

  /** Pipes once the controller has accepted the stream (its first message), so nothing is sent before it listens. */
  private pipe(socket: Socket, ws: WebSocket, request: TunnelRequest): void {
    socket.on('error', () => ws.terminate());
    ws.once('close', () => socket.destroy());
    socket.once('close', () => {
      if (ws.readyState === WebSocket.OPEN) ws.close(TUNNEL_CLOSE.done);
      else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
    });
    socket.setTimeout(this.options.idleMs ?? 3_600_000, () => {
      this.options.logger.info('closing an idle tunnel stream', { address: request.address, port: request.port });
      ws.close(TUNNEL_CLOSE.idle, 'idle');
      socket.destroy();
    });
    ws.once('message', () => {
      // attached while the accept is being emitted: the next message already reaches the stream
      const duplex = coalesceTunnelWrites(createWebSocketStream(ws, { highWaterMark: TUNNEL_STREAM_HIGH_WATER_MARK }), (data, done) =>
        ws.send(data, { binary: true }, done),
      );
      duplex.on('error', () => socket.destroy());
      socket.pipe(duplex).pipe(socket);
    });
  }
}

/** The spelling desired states use (lower-case IPv6, compressed), for comparing addresses. */
export function canonical(address: string): string {
  if (isIP(address) !== 6) return address;
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/** The addresses (not delegated prefixes) of a desired state's instances, canonical. */
export function instanceAddresses(desired: DesiredState | undefined): Set<string> {
  const addresses = new Set<string>();
  for (const instance of desired?.instances ?? [])
    for (const nic of instance.nics) for (const a of nic.addresses) if (!a.delegated) addresses.add(canonical(a.address));
  return addresses;
}

/**
 * Starts serving the controller's stream requests for `hostId` over `connection`; the returned
 * function ends the subscription and every stream.
 */
export function serveTunnels(connection: ControllerConnection, hostId: string, options: TunnelOptions, desired: () => DesiredState | undefined): () => void {
  const streams = new TunnelStreams(options, () => instanceAddresses(desired()));
  const unsubscribe = connection.tunnelRequests(
    hostId,
    streams.ports,
    (request) => streams.handle(request),
    (error) => options.logger.error('tunnel-request subscription failed', { error: String((error as Error)?.message ?? error) }),
  );
  return () => {
    unsubscribe();
    streams.closeAll();
  };
}
