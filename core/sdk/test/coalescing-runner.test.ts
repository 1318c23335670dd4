/**
 * The coalescing runner: never two runs at once, a request during a run gets exactly one more
 * run (however many requests), each request resolves only after a run that saw it, a failed run
 * rejects its requests and later runs go on, and stop ends the loop.
 */
import { describe, expect, it } from 'vitest';
import { CoalescingRunner } from '../src/coalescing-runner.js';

/** A task whose runs block until released, recording what each run saw. */
function gatedTask() {
  const seen: number[] = [];
  const gates: (() => void)[] = [];
  let value = 0;
  let active = 0;
  let maxActive = 0;
  const task = async () => {
    active++;
    maxActive = Math.max(maxActive, active);
    const read = value;
    await new Promise<void>((resolve) => gates.push(resolve));
    seen.push(read);
    active--;
  };
  return {
    task,
    seen,
    set: (v: number) => (value = v),
    /** Releases the run that waits, once one does. */
    async release() {
      while (gates.length === 0) await new Promise((r) => setTimeout(r, 1));
      gates.shift()!();
    },
    get maxActive() {
      return maxActive;
    },
  };
}

describe('CoalescingRunner', () => {
  it('runs once for requests made in the same tick', async () => {
    let runs = 0;
    const runner = new CoalescingRunner(async () => void runs++);
    await Promise.all([runner.run(), runner.run(), runner.run()]);
    expect(runs).toBe(1);
    expect(runner.running).toBe(false);
  });

  it('folds every request made during a run into one more run, which sees the latest input', async () => {
    const t = gatedTask();
    const runner = new CoalescingRunner(t.task);
    t.set(1);
    const first = runner.run();
    await new Promise((r) => setTimeout(r, 5)); // the first run has read 1 and waits
    t.set(2);
    const during = [runner.run(), runner.run(), runner.run()];
    t.set(3);
    let duringDone = false;
    void Promise.all(during).then(() => (duringDone = true));
    await t.release();
    await first;
    expect(duringDone).toBe(false); // the requests made during the first run wait for the second
    await t.release();
    await Promise.all(during);
    expect(t.seen).toEqual([1, 3]);
    expect(t.maxActive).toBe(1);
    expect(runner.running).toBe(false);
  });

  it('rejects the requests of a failed run and still runs the one requested meanwhile', async () => {
    let calls = 0;
    let release!: () => void;
    const runner = new CoalescingRunner(async () => {
      calls++;
      if (calls === 1) {
        await new Promise<void>((r) => (release = r));
        throw new Error('first run failed');
      }
    });
    const failing = runner.run();
    await new Promise((r) => setTimeout(r, 5));
    const after = runner.run();
    release();
    await expect(failing).rejects.toThrow('first run failed');
    await expect(after).resolves.toBeUndefined();
    expect(calls).toBe(2);
  });

  it('starts no run after stop; requests pending at stop resolve without one', async () => {
    const t = gatedTask();
    const runner = new CoalescingRunner(t.task);
    const first = runner.run();
    await new Promise((r) => setTimeout(r, 5));
    const pending = runner.run();
    const stopping = runner.stop();
    await t.release();
    await Promise.all([first, pending, stopping]);
    await runner.run();
    expect(t.seen).toEqual([0]);
    expect(runner.running).toBe(false);
  });
});
