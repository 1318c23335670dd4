/** A graphql-ws client of the test controller, connected at once and never retrying, kept in `clients` for the suite's clean-up. */
import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';

export function connectWs(controllerUrl: string, secret: string, clients: WsClient[]): WsClient {
  const client = createClient({
    url: controllerUrl.replace('http://', 'ws://'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: false,
    onNonLazyError: () => {},
    connectionParams: { Authorization: `Bearer ${secret}` },
  });
  clients.push(client);
  return client;
}
