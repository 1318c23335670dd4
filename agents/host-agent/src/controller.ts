/**
 * The agent's side of the controller API, over one graphql-ws connection (agents dial out; the
 * controller never connects to hosts): the desired-state and tunnel-request subscriptions and the
 * two report mutations. The connection reconnects with exponential backoff and jitter; a refused token
 * (close code 4403) is final.
 */
import { DESIRED_STATE_SUBSCRIPTION, TUNNEL_REQUESTS_SUBSCRIPTION, type DesiredStateEvent, type TunnelRequest } from '@gatehouse/agent-protocol';
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
  /** `http(s)://host:port/graphql` or `ws(s)://…`. */
  url: string;
  token: string;
  logger: AgentLogger;
  /** Backoff bounds in ms (defaults 250 and 30,000). */
  backoff?: { minMs: number; maxMs: number };
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

/** The graphql-ws connection to a controller. */
export class ControllerConnection {
  private readonly client: Client;
  private refused = false;

  constructor(private readonly options: ControllerOptions) {
    const { minMs, maxMs } = options.backoff ?? { minMs: 250, maxMs: 30_000 };
    this.client = createClient({
      url: websocketUrl(options.url),
      webSocketImpl: WebSocket,
      connectionParams: { Authorization: `Bearer ${options.token}` },
      lazy: false,
      keepAlive: 10_000,
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
        connected: () => options.onConnected?.(),
        closed: (event) => {
          const { code, reason } = event as { code?: number; reason?: string };
          options.onClosed?.(code ?? 0, reason ?? '');
          if (code === 4403 || code === 4401) this.refuse(`close code ${code}`);
        },
      },
    });
  }

  private refuse(reason: string): void {
    if (this.refused) return;
    this.refused = true;
    this.options.onRefused?.(new TokenRefusedError(reason));
  }

  /** Subscribes to the host's desired state; `onDocument` gets the full document, then a patch per revision. */
  desiredState(hostId: string, onDocument: (event: DesiredStateEvent) => void, onError: (error: unknown) => void): () => void {
    return this.client.subscribe<{ hostDesiredStateChanges: DesiredStateEvent }>(
      { query: DESIRED_STATE_SUBSCRIPTION, variables: { hostId } },
      {
        next: (result) => {
          if (result.errors?.length) onError(new Error(result.errors.map((e) => e.message).join('; ')));
          else if (result.data) onDocument(result.data.hostDesiredStateChanges);
        },
        error: onError,
        complete: () => undefined,
      },
    );
  }

  /** Subscribes to the tunnel streams the controller asks for, declaring the target ports this agent allows. */
  tunnelRequests(hostId: string, ports: readonly number[], onRequest: (request: TunnelRequest) => void, onError: (error: unknown) => void): () => void {
    return this.client.subscribe<{ hostTunnelRequests: TunnelRequest }>(
      { query: TUNNEL_REQUESTS_SUBSCRIPTION, variables: { hostId, ports } },
      {
        next: (result) => {
          if (result.errors?.length) onError(new Error(result.errors.map((e) => e.message).join('; ')));
          else if (result.data) onRequest(result.data.hostTunnelRequests);
        },
        error: onError,
        complete: () => undefined,
      },
    );
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
