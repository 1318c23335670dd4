/**
 * The byte-stream tunnel between a controller and a host agent. The controller asks for a stream
 * over the agent's graphql-ws connection (`TUNNEL_REQUESTS_SUBSCRIPTION`); the agent connects to
 * the target, then dials a WebSocket back to the controller's `TUNNEL_STREAM_PATH` and sends a
 * `TunnelStreamHello` as its first (text) message. The controller answers with one text message
 * once it has accepted the stream (the agent sends no bytes before it); after that, binary
 * messages carry the bytes both ways, and a close ends the stream on both sides.
 */

/** The controller's WebSocket path agents dial streams back to. */
export const TUNNEL_STREAM_PATH = '/agent-stream';

/** Ports an agent opens streams to unless its host is configured otherwise. */
export const DEFAULT_TUNNEL_PORTS: readonly number[] = [22];

/** One stream the controller wants: connect to `address:port`, then dial back with `ticket`. */
export interface TunnelRequest {
  /** One-time, short-lived; only good for this stream. */
  ticket: string;
  /** An address of an instance of the agent's host (the agent checks). */
  address: string;
  port: number;
}

/** The first message of a stream WebSocket (agent → controller), JSON in a text message. */
export interface TunnelStreamHello {
  /** The agent's token (never in the URL). */
  token: string;
  ticket: string;
  /** Set when the agent refuses or cannot connect: the controller fails the stream with it. */
  error?: string;
}

/** WebSocket close codes of a stream. */
export const TUNNEL_CLOSE = {
  /** The peer on the other side closed (or the target ended the connection). */
  done: 1000,
  /** Nothing went through for the idle timeout. */
  idle: 4408,
  /** The hello was missing, malformed, or its token or ticket refused. */
  refused: 4403,
} as const;

/**
 * The buffer of each side of a stream (both directions, in bytes). Bulk copies go through in
 * bigger steps than Node's default 16 KiB: fewer pauses of the peer socket and of the SSH channel.
 */
export const TUNNEL_STREAM_HIGH_WATER_MARK = 256 * 1024;

/** The largest binary message a side sends (both accept up to 1 MiB). */
export const TUNNEL_MAX_MESSAGE = 512 * 1024;

/** The part of a Node Duplex this file touches (no dependency on `node:stream` types here). */
interface WritevTarget {
  _writev?: ((chunks: { chunk: unknown }[], callback: (error?: Error | null) => void) => void) | null;
}

/**
 * Makes a WebSocket byte stream (ws' `createWebSocketStream`) send the chunks that queued up while
 * a message was being written as one message (up to `TUNNEL_MAX_MESSAGE`), instead of one message
 * each: an SSH bulk copy arrives as many small packets, and every message costs a frame, a socket
 * write and an event on the other side. A lone chunk (a keystroke) still goes out at once.
 * `send` sends one binary message and calls back once it is written.
 */
export function coalesceTunnelWrites<T extends object>(duplex: T, send: (data: Buffer, done: (error?: Error | null) => void) => void): T {
  (duplex as T & WritevTarget)._writev = (chunks, callback) => {
    const messages: Buffer[] = [];
    let parts: Buffer[] = [];
    let size = 0;
    for (const { chunk } of chunks) {
      const bytes = chunk as Buffer;
      if (size > 0 && size + bytes.length > TUNNEL_MAX_MESSAGE) {
        messages.push(Buffer.concat(parts, size));
        parts = [];
        size = 0;
      }
      parts.push(bytes);
      size += bytes.length;
    }
    if (size > 0) messages.push(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size));
    // the last send's callback answers for the batch: ws writes them in order, an error fails it
    messages.forEach((message, i) => send(message, i === messages.length - 1 ? callback : () => {}));
  };
  return duplex;
}
