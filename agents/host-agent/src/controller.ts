/**
 * The agent's side of the controller API, over one graphql-ws connection (agents dial out; the
 * controller never connects to hosts): the desired-state and tunnel-request subscriptions and the
 * two report mutations. The connection reconnects with exponential backoff and jitter; a refused token
 * (close code 4403) is final. Given several controller replicas' URLs, each connection attempt
 * after a lost or failed one goes to the next URL in turn, so an agent whose replica dies is on
 * another one within its first retry (0.125-0.25 s after the close).
 *
 * A connection that dies silently (a network cut: no FIN, no RST) is noticed by the keep-alive:
 * a ping every `keepAliveMs` (10 s) that gets no pong within `pongTimeoutMs` (5 s) ends the
 * connection, and each new attempt gives up after `handshakeTimeoutMs` (5 s) instead of waiting for
 * the kernel's SYN retries (minutes), so the agent is back within one backoff of the cut healing.
 * The dead connection's socket is destroyed, not closed: a close waits for the controller's close
 * frame, and graphql-ws would meanwhile pass on what still arrives on it (once the cut heals, TCP
 * delivers the revisions sent into the cut) to the same subscription on the new connection.
 */
import {
  DESIRED_STATE_SUBSCRIPTION,
  DIAGNOSIS_REQUESTS_SUBSCRIPTION,
  TUNNEL_REQUESTS_SUBSCRIPTION,
  type DesiredStateEvent,
  type DiagnosisRequest,
  type TunnelRequest,
} from '@gatehouse/agent-protocol';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

/** How the agent logs. */
export interface AgentLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** The controller refused the agent's token; reconnecting will not help. */
export class TokenRefusedError extends Error {
  constructor(readonly reason: string) {
    super(`the controller refused the agent token (${reason}); check --token and that it is not revoked`);
    this.name = 'TokenRefusedError';
  }
}

export type { DesiredStateEvent } from '@gatehouse/agent-protocol';

export interface ControllerOptions {
  /** `http(s)://host:port/graphql` or `ws(s)://…`; several replicas' URLs are tried in turn. */
  url: string | readonly string[];
  token: string;
  logger: AgentLogger;
  /** Backoff bounds in ms (defaults 250 and 30,000). */
  backoff?: { minMs: number; maxMs: number };
  /** Keep-alive ping period (default 10,000 ms), how long its pong may take (default 5,000 ms), and how long opening a connection may take (default 5,000 ms). */
  liveness?: { keepAliveMs?: number; pongTimeoutMs?: number; handshakeTimeoutMs?: number };
  onConnected?: () => void;
  onClosed?: (code: number, reason: string) => void;
  /** Called once when the token is refused: the agent stops. */
  onRefused?: (error: TokenRefusedError) => void;
}

/** Turns an http(s) URL into the ws(s) one the controller serves graphql-ws on. */
export function websocketUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  else if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new Error(`--controller ${url} must be an http(s) or ws(s) URL`);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/graphql';
  return u.toString();
}

/** The WebSocket class graphql-ws opens connections with: `ws`, with a bound on the opening handshake. */
function timedWebSocket(handshakeTimeout: number): typeof WebSocket {
  return class extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, { handshakeTimeout });
    }
  } as typeof WebSocket;
}

/** The graphql-ws connection to a controller. */
export class ControllerConnection {
  private readonly client: Client;
  private refused = false;
  private readonly urls: readonly string[];
  /** Index in `urls` of the last connection attempt. */
  private current = 0;
  private attempts = 0;

  constructor(private readonly options: ControllerOptions) {
    const { minMs, maxMs } = options.backoff ?? { minMs: 250, maxMs: 30_000 };
    const given = typeof options.url === 'string' ? [options.url] : options.url;
    if (given.length === 0) throw new Error('no controller URL given');
    this.urls = given.map((u) => websocketUrl(u));
    const { keepAliveMs = 10_000, pongTimeoutMs = 5000, handshakeTimeoutMs = 5000 } = options.liveness ?? {};
    let pongDue: NodeJS.Timeout | undefined;
    /** The socket of the current connection attempt. */
    let socket: WebSocket | undefined;
    const pongArrived = () => {
      clearTimeout(pongDue);
      pongDue = undefined;
    };
    this.client = createClient({
      // the first attempt goes to the first URL; every later one (the previous connection lost or refused) to the next
      url: () => {
        this.current = this.attempts++ === 0 ? 0 : (this.current + 1) % this.urls.length;
        return this.urls[this.current]!;
      },
      webSocketImpl: timedWebSocket(handshakeTimeoutMs),
      connectionParams: { Authorization: `Bearer ${options.token}` },
      lazy: false,
      keepAlive: keepAliveMs,
      connectionAckWaitTimeout: handshakeTimeoutMs,
      retryAttempts: Number.POSITIVE_INFINITY,
      retryWait: async (retries) => {
        const ms = Math.min(maxMs, minMs * 2 ** Math.min(retries, 16));
        await new Promise((r) => setTimeout(r, ms / 2 + Math.random() * (ms / 2)));
      },
      shouldRetry: (event) => {
        const code = (event as { code?: number }).code;
        if (code === 4403 || code === 4401) {
          this.refuse(`close code ${code}`);
          return false;
        }
        return !this.refused;
      },
      on: {
        opened: (opened) => {
          socket = opened as WebSocket;
        },
        connected: () => options.onConnected?.(),
        ping: (received) => {
          if (received) return;
          // our ping: a connection that cannot answer it in time is dead, though no close came
          pongArrived();
          pongDue = setTimeout(() => {
            options.logger.warn(`no answer from the controller for ${pongTimeoutMs} ms after a keep-alive ping; reconnecting`, { url: this.url });
            socket?.terminate();
            this.client.terminate();
          }, pongTimeoutMs);
          pongDue.unref();
        },
        pong: (received) => {
          if (received) pongArrived();
        },
        closed: (event) => {
          pongArrived();
          const { code, reason } = event as { code?: number; reason?: string };
          options.onClosed?.(code ?? 0, reason ?? '');
          if (code === 4403 || code === 4401) this.refuse(`close code ${code}`);
        },
      },
    });
  }

  /** The controller URL (ws or wss) of the current or last connection attempt. */
  get url(): string {
    return this.urls[this.current]!;
  }

  private refuse(reason: string): void {
    if (this.refused) return;
    this.refused = true;
    this.options.onRefused?.(new TokenRefusedError(reason));
  }

  /** Subscribes to one field's events: `onItem` gets each value of `field`, `onError` GraphQL and transport errors. */
  private subscribeTo<T>(
    query: string,
    variables: Record<string, unknown>,
    field: string,
    onItem: (item: T) => void,
    onError: (error: unknown) => void,
  ): () => void {
    return this.client.subscribe<Record<string, T>>(
      { query, variables },
      {
        next: (result) => {
          if (result.errors?.length) onError(new Error(result.errors.map((e) => e.message).join('; ')));
          else if (result.data) onItem(result.data[field]!);
        },
        error: onError,
        complete: () => undefined,
      },
    );
  }

  /** Subscribes to the host's desired state; `onDocument` gets the full document, then a patch per revision. */
  desiredState(hostId: string, onDocument: (event: DesiredStateEvent) => void, onError: (error: unknown) => void): () => void {
    return this.subscribeTo(DESIRED_STATE_SUBSCRIPTION, { hostId }, 'hostDesiredStateChanges', onDocument, onError);
  }

  /** Subscribes to the tunnel streams the controller asks for, declaring the target ports this agent allows. */
  tunnelRequests(hostId: string, ports: readonly number[], onRequest: (request: TunnelRequest) => void, onError: (error: unknown) => void): () => void {
    return this.subscribeTo(TUNNEL_REQUESTS_SUBSCRIPTION, { hostId, ports }, 'hostTunnelRequests', onRequest, onError);
  }

  /** Subscribes to the forward diagnoses the controller asks for. */
  diagnosisRequests(hostId: string, onRequest: (request: DiagnosisRequest) => void, onError: (error: unknown) => void): () => void {
    return this.subscribeTo(DIAGNOSIS_REQUESTS_SUBSCRIPTION, { hostId }, 'hostDiagnosisRequests', onRequest, onError);
  }

  /** Runs a query or mutation over the connection (waits for it to be up). */
  request<T>(query: string, variables: Record<string, unknown>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let data: T | undefined;
      this.client.subscribe<T>(
        { query, variables },
        {
          next: (result) => {
            if (result.errors?.length) reject(new Error(result.errors.map((e) => e.message).join('; ')));
            else data = result.data as T;
          },
          error: reject,
          complete: () => (data === undefined ? reject(new Error('the controller answered nothing')) : resolve(data)),
        },
      );
    });
  }

  async close(): Promise<void> {
    this.refused = true;
    await this.client.dispose();
  }
}
