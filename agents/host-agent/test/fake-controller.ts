/**
 * A misbehaving controller for fault tests: a bare graphql-transport-ws server on loopback that
 * sends whatever desired-state documents the test gives it — also malformed ones a real controller
 * never would — and records the agent's reports.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

interface Message {
  id?: string;
  type: string;
  payload?: { query?: string; variables?: Record<string, unknown> };
}

/** One report mutation as the agent sent it. */
export interface Report {
  mutation: 'reportHostStatus' | 'reportObjectStatus' | 'reportTraffic';
  input: Record<string, any>;
}

export class FakeController {
  readonly reports: Report[] = [];
  private readonly server: WebSocketServer;
  private subscriptions: { socket: WebSocket; id: string }[] = [];
  private last: { revision: number; document: unknown } | undefined;
  /** How many desired-state subscriptions agents have opened. */
  subscriptionsOpened = 0;
  private waiters = new Set<() => void>();

  private constructor(server: WebSocketServer) {
    this.server = server;
    server.on('connection', (socket) => socket.on('message', (data) => this.receive(socket, JSON.parse(String(data)) as Message)));
  }

  /** Listens on loopback, on `port` (0: a free one; a given one: a controller coming back where it was). */
  static async start(port = 0): Promise<FakeController> {
    const server = new WebSocketServer({ host: '127.0.0.1', port, path: '/graphql' });
    await once(server, 'listening');
    return new FakeController(server);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}/graphql`;
  }

  /** Sends a full desired-state document (any shape) to every subscribed agent, and first to later ones. */
  push(revision: number, document: unknown): void {
    this.last = { revision, document };
    for (const { socket, id } of this.subscriptions) this.send(socket, id, revision, { full: document, patch: null });
  }

  /** Sends a patch (any shape) to every subscribed agent; later ones get the last full document. */
  pushPatch(revision: number, patch: unknown): void {
    for (const { socket, id } of this.subscriptions) this.send(socket, id, revision, { full: null, patch });
  }

  /** Ends every open desired-state subscription with a GraphQL error (as a controller whose database is down would). */
  failSubscriptions(message: string): void {
    for (const { socket, id } of this.subscriptions) socket.send(JSON.stringify({ id, type: 'error', payload: [{ message }] }));
    this.subscriptions = [];
  }

  /** Resolves with the first report (from index `from` on) that `match` accepts; rejects after `ms`. */
  waitForReport(match: (r: Report) => boolean, from = 0, ms = 15_000): Promise<Report> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.reports.slice(from).find(match);
        if (!found) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no matching report in ${ms} ms; reports:\n${JSON.stringify(this.reports.slice(from), null, 1).slice(-3000)}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private send(socket: WebSocket, id: string, revision: number, message: { full: unknown; patch: unknown }): void {
    const hostId = (message.full as { hostId?: unknown } | null)?.hostId ?? 'unknown';
    socket.send(JSON.stringify({ id, type: 'next', payload: { data: { hostDesiredStateChanges: { hostId, revision, apiVersion: 1, ...message } } } }));
  }

  private receive(socket: WebSocket, message: Message): void {
    if (message.type === 'connection_init') return socket.send(JSON.stringify({ type: 'connection_ack' }));
    if (message.type === 'ping') return socket.send(JSON.stringify({ type: 'pong' }));
    if (message.type === 'complete') {
      this.subscriptions = this.subscriptions.filter((s) => !(s.socket === socket && s.id === message.id));
      return;
    }
    if (message.type !== 'subscribe' || !message.id) return;
    const query = message.payload?.query ?? '';
    if (query.includes('hostDesiredStateChanges')) {
      this.subscriptions.push({ socket, id: message.id });
      this.subscriptionsOpened++;
      if (this.last) this.send(socket, message.id, this.last.revision, { full: this.last.document, patch: null });
      return;
    }
    const mutation = /(reportHostStatus|reportObjectStatus|reportTraffic)/.exec(query)?.[1] as Report['mutation'] | undefined;
    if (!mutation) {
      socket.send(JSON.stringify({ id: message.id, type: 'error', payload: [{ message: 'the fake controller answers no such operation' }] }));
      return;
    }
    this.reports.push({ mutation, input: message.payload!.variables!.input as Record<string, unknown> });
    for (const w of [...this.waiters]) w();
    socket.send(JSON.stringify({ id: message.id, type: 'next', payload: { data: { [mutation]: { __typename: 'Ok' } } } }));
    socket.send(JSON.stringify({ id: message.id, type: 'complete' }));
  }
}
