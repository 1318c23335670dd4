/** Coalesces bursts of updates into one React render per animation frame. */
import { useCallback, useEffect, useRef, useState } from 'react';

/**
 * A counter that advances at most once per animation frame, however often `schedule` is called in
 * it: live samples arriving together (a reconnect's backlog, several instances' events) make one
 * chart `setData` and one render, not one each.
 */
export function useFrameBatch(): [version: number, schedule: () => void] {
  const [version, setVersion] = useState(0);
  const pending = useRef<number | null>(null);
  const schedule = useCallback(() => {
    if (pending.current !== null) return;
    pending.current = requestAnimationFrame(() => {
      pending.current = null;
      setVersion((v) => v + 1);
    });
  }, []);
  useEffect(
    () => () => {
      if (pending.current !== null) cancelAnimationFrame(pending.current);
    },
    [],
  );
  return [version, schedule];
}
