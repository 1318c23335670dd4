/** What the traffic suites share: a host's agent token, instance ids by name, and a graphql-ws subscription that collects what it receives. */
import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import type { Client } from '../../src/testing/api.js';

/** Creates an AGENT token of the admin for the host (what its agent reports traffic with); returns the secret. */
export async function agentSecret(admin: Client, hostId: string): Promise<string> {
  const adminId = (await admin('{ me { id } }')).data.me.id;
  const token = await admin(
    `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
    { u: adminId, h: hostId },
  );
  return token.data.createApiToken.created.secret;
}

/** The ids of the named instances (every instance the admin sees, by name). */
export async function instanceIdsByName(admin: Client): Promise<Map<string, string>> {
  const edges = (await admin('{ instances { edges { node { id name } } } }')).data.instances.edges as { node: { id: string; name: string } }[];
  return new Map(edges.map((e) => [e.node.name, e.node.id]));
}

/**
 * Subscribes over graphql-ws with a bearer token (the client is added to `clients` for disposal):
 * `seen` collects the subscription field's value of each message, `closed` the close code.
 */
export function watchWs<T>(options: { url: string; secret: string; query: string; variables?: Record<string, unknown>; field: string; clients: WsClient[] }): {
  seen: T[];
  closed: Promise<number>;
} {
  const client = createClient({
    url: options.url.replace('http://', 'ws://'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    connectionParams: { Authorization: `Bearer ${options.secret}` },
  });
  options.clients.push(client);
  const seen: T[] = [];
  const closed = new Promise<number>((resolve) => client.on('closed', (e) => resolve((e as { code: number }).code)));
  client.subscribe<Record<string, T>>(
    { query: options.query, variables: options.variables ?? {} },
    { next: (m) => m.data && seen.push(m.data[options.field]!), error: () => {}, complete: () => {} },
  );
  return { seen, closed };
}
