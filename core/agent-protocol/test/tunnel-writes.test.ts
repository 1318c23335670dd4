import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TUNNEL_MAX_MESSAGE, coalesceTunnelWrites } from '../src/tunnel.js';

/** A duplex whose writes are messages `send` receives; each send completes when `complete` is called. */
function stream() {
  const messages: Buffer[] = [];
  const pending: (() => void)[] = [];
  const send = (data: Buffer, done: (error?: Error | null) => void) => {
    messages.push(data);
    pending.push(() => done());
  };
  const duplex = coalesceTunnelWrites(new Duplex({ highWaterMark: 1 << 20, read() {}, write: (chunk: Buffer, _e, done) => send(chunk, done) }), send);
  /** Completes the sends made so far (not those they lead to). */
  const complete = () => {
    for (const done of pending.splice(0)) done();
  };
  return { duplex, messages, complete };
}

describe('coalesceTunnelWrites', () => {
  it('sends a lone chunk at once, and the chunks queued behind it as one message, bytes in order', async () => {
    const { duplex, messages, complete } = stream();
    duplex.write(Buffer.from('a'));
    expect(messages.map(String)).toEqual(['a']);
    for (const c of ['b', 'c', 'd']) duplex.write(Buffer.from(c));
    expect(messages).toHaveLength(1); // waiting for the first send
    complete();
    await new Promise((r) => setImmediate(r));
    expect(messages.map(String)).toEqual(['a', 'bcd']);
  });

  it(`splits a queue longer than ${TUNNEL_MAX_MESSAGE} bytes into messages of at most that, and reports done after the last`, async () => {
    const { duplex, messages, complete } = stream();
    const chunk = Buffer.alloc(100 * 1024, 1);
    duplex.write(Buffer.from('x'));
    let written = 0;
    for (let i = 0; i < 12; i++) duplex.write(chunk, () => written++);
    complete();
    await new Promise((r) => setImmediate(r));
    expect(messages.slice(1).map((m) => m.length)).toEqual([5 * 100 * 1024, 5 * 100 * 1024, 2 * 100 * 1024]);
    expect(written).toBe(0); // the batch waits for its last send
    complete();
    await new Promise((r) => setImmediate(r));
    expect(written).toBe(12);
    expect(Buffer.concat(messages).length).toBe(1 + 12 * 100 * 1024);
  });
});
