/** The billing period's traffic against the monthly quota: a bar, the figures, the state and whether the throttle is in force. */
import { Meter } from '../components/meter.js';
import { formatBytes } from './units.js';

/** The fields of `TrafficPeriod` the usage shows. */
export interface QuotaPeriod {
  totalBytes: number;
  quotaBytes: number | null;
  quotaState: 'NORMAL' | 'WARNING' | 'EXCEEDED' | null;
  throttled: boolean;
}

const STATE_TEXT = { NORMAL: 'within the quota', WARNING: '80 % of the quota used', EXCEEDED: 'quota exceeded' } as const;

/** The usage, or a sentence saying there is no quota. */
export function QuotaUsage({ period, throttleMbps }: { period: QuotaPeriod; throttleMbps?: number | null }) {
  if (period.quotaBytes === null) return <p className="quota-usage">No monthly quota: {formatBytes(period.totalBytes)} used this period.</p>;
  const tone = period.quotaState === 'EXCEEDED' ? 'exceeded' : period.quotaState === 'WARNING' ? 'warning' : undefined;
  return (
    <div className="quota-usage" data-quota-state={period.quotaState ?? ''} data-throttled={period.throttled}>
      <Meter label="Quota used" value={period.totalBytes} max={period.quotaBytes} tone={tone} />
      <span>
        {formatBytes(period.totalBytes)} of {formatBytes(period.quotaBytes)}
        {period.quotaState && ` · ${STATE_TEXT[period.quotaState]}`}
      </span>
      {period.throttled && (
        <strong className="throttled" role="status">
          Throttled{throttleMbps ? ` to ${throttleMbps} Mbit/s` : ''} until the period ends
        </strong>
      )}
    </div>
  );
}
