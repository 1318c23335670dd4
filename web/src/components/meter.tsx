/** A horizontal bar showing how much of something is used (an ARIA meter). */

/** `value` of `max` as a bar; `tone` colours it (a quota near or past its end). */
export function Meter({ label, value, max, tone }: { label: string; value: number; max: number; tone?: 'warning' | 'exceeded' }) {
  const share = max > 0 ? value / max : 0;
  return (
    <div className={tone ? `meter meter-${tone}` : 'meter'} role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={max} aria-valuenow={Math.min(value, max)}>
      <span style={{ width: `${Math.min(share * 100, 100)}%` }} />
    </div>
  );
}
