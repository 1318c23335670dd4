/**
 * The tunnel through a host agent, without root: a controller in this process, the agent's tunnel
 * code (the same `serveTunnels` a HostAgent runs) connected to it over graphql-ws, and a TCP
 * server standing in for the instance's sshd on 127.0.0.1. What the controller's jump server
 * does with a stream — ask the host's agent, get bytes through — is done here through the broker.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ControllerConnection, serveTunnels } from '@gatehouse/host-agent';
import type { DesiredState } from '@gatehouse/sdk';
import { TunnelBroker, startController, type Controller } from '@gatehouse/server';

const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));
const ERR = '... on Error { code message }';
const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** A TCP echo server on 127.0.0.1 that remembers its connections. */
function echoServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port, sockets })));
}

/** Writes `data` to a stream and reads as many bytes back. */
async function roundTrip(stream: Duplex, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      length += c.length;
      if (length >= data.length) resolve();
    });
    stream.once('error', reject);
    stream.once('close', () => (length >= data.length ? resolve() : reject(new Error(`closed after ${length} bytes`))));
  });
  for (let i = 0; i < data.length; i += 64 * 1024) if (!stream.write(data.subarray(i, i + 64 * 1024))) await once(stream, 'drain');
  await done;
  return Buffer.concat(chunks);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('tunnel streams through a host agent', { timeout: 20_000 }, () => {
  let controller: Controller;
  let broker: TunnelBroker;
  let hostId: string;
  let agentToken: string;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let connection: ControllerConnection;
  let stopTunnels: () => void;

  const api = async (query: string, variables?: Record<string, unknown>) => {
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${controller.bootstrapSecret}` },
      body: JSON.stringify({ query, variables }),
    });
    return ((await response.json()) as { data: any }).data;
  };
  const agentSubscribed = async (id: string) => {
    for (let i = 0; i < 100 && !broker.allowedPorts(id); i++) await new Promise((r) => setTimeout(r, 50));
    return broker.allowedPorts(id);
  };

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0 });
    broker = controller.container.resolve(TunnelBroker);
    echo = await echoServer();
    const h = await api(`mutation { createHost(input: { name: "t1", backend: LINUX }) { ... on CreateHostPayload { host { id } } ${ERR} } }`);
    hostId = h.createHost.host.id;
    const t = await api(
      `mutation ($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { h: hostId },
    );
    agentToken = t.createApiToken.created.secret;
    connection = new ControllerConnection({ url: controller.url, token: agentToken, logger });
    // the instance's address as the newest desired state lists it
    const desired = { instances: [{ nics: [{ addresses: [{ address: '127.0.0.1', delegated: false }] }] }] } as unknown as DesiredState;
    stopTunnels = serveTunnels(
      connection,
      hostId,
      { controllerUrl: controller.url, token: agentToken, logger, ports: [echo.port], maxStreams: 3 },
      () => desired,
    );
    expect(await agentSubscribed(hostId)).toEqual([echo.port]);
  });

  afterAll(async () => {
    stopTunnels?.();
    await connection?.close();
    await controller?.close();
    echo?.server.close();
  });

  it('carries 8 MB to the instance and back intact', async () => {
    const stream = await broker.open(hostId, '127.0.0.1', echo.port);
    const data = randomBytes(8 * 1024 * 1024);
    const back = await roundTrip(stream, data);
    expect(back.length).toBe(data.length);
    expect(sha256(back)).toBe(sha256(data));
    stream.destroy();
    // the close reaches the instance's side
    for (let i = 0; i < 100 && echo.sockets.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(echo.sockets.size).toBe(0);
  });

  it('passes a close by the instance to the controller', async () => {
    const stream = await broker.open(hostId, '127.0.0.1', echo.port);
    await roundTrip(stream, Buffer.from('ping'));
    const closed = once(stream, 'close');
    for (const s of echo.sockets) s.destroy();
    await closed;
  });

  it('refuses an address that is not one of its instances, and the controller asks for no port the agent does not allow', async () => {
    const before = echo.sockets.size;
    await expect(broker.open(hostId, '127.0.0.2', echo.port)).rejects.toThrow(/refused: 127\.0\.0\.2 is not an address of an instance on this host/);
    await expect(broker.open(hostId, '127.0.0.1', 22)).rejects.toThrow(/port 22 is not open to tunnels on host .* \(allowed: \d+\)/);
    expect(echo.sockets.size).toBe(before);
  });

  it('holds at most the stream limit of the agent open', async () => {
    const streams = await Promise.all([1, 2, 3].map(() => broker.open(hostId, '127.0.0.1', echo.port)));
    await expect(broker.open(hostId, '127.0.0.1', echo.port)).rejects.toThrow(/3 streams open, its limit/);
    for (const s of streams) s.destroy();
    for (let i = 0; i < 100 && echo.sockets.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const again = await broker.open(hostId, '127.0.0.1', echo.port);
    again.destroy();
  });

  it('refuses a dial-back with an unknown ticket, and one without the agent token', async () => {
    const url = controller.url.replace('http:', 'ws:').replace('/graphql', '/agent-stream');
    const closeCode = (hello: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url);
        ws.on('open', () => ws.send(hello));
        ws.on('close', (code) => resolve(code));
        ws.on('error', () => undefined);
      });
    expect(await closeCode(JSON.stringify({ token: agentToken, ticket: 'made-up' }))).toBe(4403);
    expect(await closeCode('not json')).toBe(4403);
  });

  it('says when the host has no agent connected', async () => {
    await expect(broker.open('00000000-0000-4000-8000-000000000000', '127.0.0.1', 22)).rejects.toThrow(/is not connected/);
  });

  it('closes the streams of an agent that is killed', async () => {
    const h = await api(`mutation { createHost(input: { name: "t2", backend: LINUX }) { ... on CreateHostPayload { host { id } } ${ERR} } }`);
    const otherHost = h.createHost.host.id as string;
    const t = await api(
      `mutation ($h: ID!) { createApiToken(input: { name: "agent2", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { h: otherHost },
    );
    const child: ChildProcess = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/support/tunnel-agent.ts', controller.url, otherHost, '127.0.0.1', String(echo.port)],
      {
        cwd: CLI_DIR,
        env: { ...process.env, GATEHOUSE_AGENT_TOKEN: t.createApiToken.created.secret },
        stdio: 'ignore',
      },
    );
    try {
      expect(await agentSubscribed(otherHost)).toEqual([echo.port]);
      const streams = await Promise.all([1, 2].map(() => broker.open(otherHost, '127.0.0.1', echo.port)));
      for (const s of streams) expect((await roundTrip(s, Buffer.from('hello'))).toString()).toBe('hello');
      const closed = streams.map((s) => once(s, 'close'));
      child.kill('SIGKILL');
      await Promise.all(closed);
      // its connections to the instance went with the process
      for (let i = 0; i < 100 && echo.sockets.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(echo.sockets.size).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
