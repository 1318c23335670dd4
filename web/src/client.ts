/** The urql client: queries and mutations over HTTP, subscriptions over graphql-ws, both with the session's bearer token. */
import { Client, fetchExchange, subscriptionExchange } from 'urql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';

/** A client and the socket it owns (closed when the session changes). */
export interface ApiClient {
  client: Client;
  dispose(): void;
}

/** The API endpoint of the page's own origin, for HTTP or WebSocket. */
export function apiUrl(kind: 'http' | 'ws', origin: string = location.origin): string {
  const url = new URL('/graphql', origin);
  if (kind === 'ws') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

/**
 * A client acting with `token` (none: only signIn works). `onUnauthenticated` runs when the
 * controller refuses the token (expired or revoked session: HTTP 401, or WebSocket close 4403).
 */
export function createApiClient(token: string | undefined, onUnauthenticated: () => void): ApiClient {
  const authorization = token ? { Authorization: `Bearer ${token}` } : undefined;
  let ws: WsClient | undefined;
  const exchanges = [fetchExchange];
  if (token) {
    ws = createWsClient({
      url: apiUrl('ws'),
      lazy: true,
      connectionParams: () => authorization ?? {},
      retryAttempts: 5,
      shouldRetry: (event) => !(event instanceof CloseEvent && event.code === 4403),
      on: { closed: (event) => (event as CloseEvent).code === 4403 && onUnauthenticated() },
    });
    const socket = ws;
    exchanges.push(
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: socket.subscribe({ ...request, query: request.query ?? '' }, sink) }),
        }),
      }),
    );
  }
  const client = new Client({
    url: apiUrl('http'),
    exchanges,
    requestPolicy: 'cache-and-network',
    fetchOptions: () => ({ headers: { ...authorization } }),
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      if (response.status === 401 && token) onUnauthenticated();
      return response;
    },
  });
  return { client, dispose: () => void ws?.dispose() };
}
