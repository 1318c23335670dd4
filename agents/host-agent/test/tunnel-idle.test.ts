/**
 * The agent's tunnel streams close after their idle timeout, on loopback: a target TCP server, a
 * stand-in for the controller's /agent-stream that accepts the hello, and the agent's
 * TunnelStreams between them. Bytes either way keep a stream open; silence closes it with the
 * idle close code, and the target connection closes with it.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { TUNNEL_CLOSE, TUNNEL_STREAM_PATH } from '@gatehouse/agent-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { TunnelStreams } from '../src/tunnel.js';
import { until } from './support.js';

const IDLE_MS = 1500;
const quiet = { info: () => {}, warn: () => {}, error: () => {} };

describe('tunnel streams: idle timeout', () => {
  let target: Server;
  let controller: WebSocketServer;
  const targets: { socket: Socket; closed: boolean; received: number }[] = [];
  const streams: { ws: WebSocket; path: string; accepted: boolean; closeCode?: number }[] = [];
  let tunnels: TunnelStreams;

  beforeAll(async () => {
    target = createServer((socket) => {
      const t = { socket, closed: false, received: 0 };
      targets.push(t);
      socket.on('data', (d) => (t.received += d.length));
      socket.once('close', () => (t.closed = true));
      socket.on('error', () => {});
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    controller = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((r) => controller.once('listening', r));
    controller.on('connection', (ws, request) => {
      const s: (typeof streams)[number] = { ws, path: request.url ?? '', accepted: false };
      streams.push(s);
      // the hello, accepted
      ws.once('message', () => {
        ws.send('ok');
        s.accepted = true;
      });
      ws.once('close', (code) => (s.closeCode = code));
    });
    const port = (target.address() as { port: number }).port;
    tunnels = new TunnelStreams(
      {
        controllerUrl: `http://127.0.0.1:${(controller.address() as { port: number }).port}/graphql`,
        token: 'agent-token',
        logger: quiet,
        ports: [port],
        idleMs: IDLE_MS,
      },
      () => new Set(['127.0.0.1']),
    );
  });

  afterAll(async () => {
    tunnels?.closeAll();
    await new Promise((r) => controller?.close(r));
    await new Promise((r) => target?.close(r));
  });

  it('keeps a stream open while bytes go through, and closes it once it is idle, with the target connection', async () => {
    const port = (target.address() as { port: number }).port;
    tunnels.handle({ ticket: 'ticket-1', address: '127.0.0.1', port });
    const stream = await until(async () => (streams[0]?.accepted && targets[0] ? streams[0] : undefined), 10_000);
    expect(stream?.path).toBe(TUNNEL_STREAM_PATH);
    // bytes every 100 ms for twice the idle timeout: still open
    for (let i = 0; i < (2 * IDLE_MS) / 100; i++) {
      stream!.ws.send(Buffer.from('x'));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(stream!.closeCode).toBeUndefined();
    expect(targets[0]!.closed).toBe(false);
    expect(await until(async () => targets[0]!.received === (2 * IDLE_MS) / 100 || undefined, 5_000)).toBe(true);
    expect(tunnels.size).toBe(1);
    // then silence: closed as idle, both sides
    const closed = await until(async () => (stream!.closeCode !== undefined && targets[0]!.closed ? stream!.closeCode : undefined), IDLE_MS + 10_000);
    expect(closed).toBe(TUNNEL_CLOSE.idle);
    expect(await until(async () => tunnels.size === 0 || undefined, 5_000)).toBe(true);
  }, 30_000);
});
