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
