/** Helpers for the async streams behind subscriptions. */

/**
 * Pushes what `source` yields, mapped, into a Repeater until the source ends (then stops the
 * Repeater) or the Repeater stops (then the wait for the source's next value is abandoned — it may
 * wait for a revision that never comes). Errors stop the Repeater with the error. The caller ends
 * the source (`return()`) once `stop` has settled.
 */
export function relay<T, U>(
  source: AsyncIterator<T>,
  push: (value: U) => Promise<unknown>,
  stop: ((error?: unknown) => void) & Promise<unknown>,
  map: (value: T) => U,
): void {
  void (async () => {
    try {
      for (;;) {
        const next = await Promise.race([source.next(), stop.then(() => undefined)]);
        if (next === undefined || next.done) break;
        await push(map(next.value));
      }
      stop();
    } catch (err) {
      stop(err);
    }
  })();
}
