/**
 * The agent's controller connection when a connection dies silently: a controller of the test's
 * own (graphql-transport-ws over `ws` on loopback) stops reading its first connection, so the
 * agent's keep-alive ping goes unanswered and the agent opens a second one. What the first
 * connection still carries afterwards (as TCP delivers what was sent into a healed network cut)
 * must not reach the subscription: the partition test saw the agent apply such a revision.
 */
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { ControllerConnection } from '../src/controller.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

interface Peer {
  socket: WebSocket;
  subscriptionId?: string;
}

describe('the controller connection after a keep-alive ping without an answer', () => {
  let server: WebSocketServer | undefined;
  let connection: ControllerConnection | undefined;
  afterEach(async () => {
    await connection?.close();
    for (const client of server?.clients ?? []) client.terminate();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  it('ends the dead connection at once: nothing it carries later reaches the subscription on the new one', async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' });
    const peers: Peer[] = [];
    const next = (peer: Peer, marker: string) =>
      peer.socket.send(JSON.stringify({ id: peer.subscriptionId, type: 'next', payload: { data: { hostDesiredStateChanges: { marker } } } }));
    server.on('connection', (socket: WebSocket & { _socket?: { pause(): void } }) => {
      const peer: Peer = { socket };
      peers.push(peer);
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as { type: string; id?: string };
        if (message.type === 'connection_init') socket.send(JSON.stringify({ type: 'connection_ack' }));
        else if (message.type === 'ping') socket.send(JSON.stringify({ type: 'pong' }));
        else if (message.type === 'subscribe') {
          peer.subscriptionId = message.id;
          if (peers.length === 1) {
            next(peer, 'first');
            // the first connection goes deaf: no pong, no close frame read
            socket._socket!.pause();
          } else {
            // what the dead connection still delivers, then the new connection's document
            next(peers[0]!, 'stale');
            next(peer, 'second');
          }
        }
      });
    });
    await new Promise<void>((resolve) => server!.once('listening', () => resolve()));
    const { port } = server.address() as AddressInfo;

    const received: string[] = [];
    const errors: unknown[] = [];
    connection = new ControllerConnection({
      url: `http://127.0.0.1:${port}/graphql`,
      token: 'test',
      logger: quiet,
      backoff: { minMs: 10, maxMs: 20 },
      liveness: { keepAliveMs: 100, pongTimeoutMs: 200, handshakeTimeoutMs: 2000 },
    });
    connection.desiredState(
      'host',
      (event) => received.push((event as unknown as { marker: string }).marker),
      (error) => errors.push(error),
    );
    for (const end = Date.now() + 10_000; !received.includes('second') && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
    // give a stale message time to arrive, had it been let through
    await new Promise((r) => setTimeout(r, 300));
    expect(peers.length).toBe(2);
    expect(received).toEqual(['first', 'second']);
    expect(errors).toEqual([]);
  });
});
