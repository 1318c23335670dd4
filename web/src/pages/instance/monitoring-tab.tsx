/**
 * Monitoring → Network: the instance's live receive/send rates from `trafficUpdated` (a bounded
 * buffer of the last minutes), the 24-hour curve, and the billing period's totals with the 95th
 * percentile, all counted on the host side.
 */
import { useEffect, useMemo, useRef } from 'react';
import { useQuery, useSubscription } from 'urql';
import { graphql } from '../../graphql.js';
import { SeriesBuffer } from '../../traffic/series-buffer.js';
import { TrafficChart, type ChartSeries } from '../../traffic/traffic-chart.js';
import { useFrameBatch } from '../../traffic/use-frame-batch.js';
import { QuotaUsage } from '../../traffic/quota-usage.js';
import { formatBitRate, formatBytes } from '../../traffic/units.js';
import type { TabProps } from './instance-page.js';

const TrafficQuery = graphql(`
  query InstanceTraffic($id: ID!) {
    instance(id: $id) {
      id
      traffic {
        live {
          at
          rxBps
          txBps
        }
        history(range: LAST_24H) {
          at
          rxBps
          txBps
        }
        period {
          start
          end
          rxBytes
          txBytes
          totalBytes
          projectedTotalBytes
          p95Bps
          rxP95Bps
          txP95Bps
          quotaBytes
          quotaState
          throttled
        }
      }
    }
  }
`);

const TrafficSubscription = graphql(`
  subscription InstanceTrafficUpdated($ids: [ID!]) {
    trafficUpdated(instanceIds: $ids) {
      at
      instances {
        instanceId
        rxBps
        txBps
      }
    }
  }
`);

/** Live samples kept: ten minutes at the agents' default 1 s interval. */
export const LIVE_SAMPLES = 600;
// the 24-hour curve and the period are buckets of minutes: asking again each minute is enough
const HISTORY_REFRESH_MS = 60_000;
const SERIES: ChartSeries[] = [
  { label: 'Received', color: '#1f5fbf' },
  { label: 'Sent', color: '#c2571a' },
];
const seconds = (iso: string) => Date.parse(iso) / 1000;

/** The Monitoring tab. */
export function MonitoringTab({ instance }: TabProps) {
  const [{ data, error }, reexecute] = useQuery({ query: TrafficQuery, variables: { id: instance.id } });
  useEffect(() => {
    const timer = setInterval(() => reexecute({ requestPolicy: 'network-only' }), HISTORY_REFRESH_MS);
    return () => clearInterval(timer);
  }, [reexecute]);

  const buffer = useRef(new SeriesBuffer(2, LIVE_SAMPLES));
  const [version, redraw] = useFrameBatch();
  const live = data?.instance?.traffic.live;
  useEffect(() => {
    // the rate the controller last knew starts the live line
    if (live && buffer.current.length === 0) {
      buffer.current.push(seconds(live.at), [live.rxBps, live.txBps]);
      redraw();
    }
  }, [live, redraw]);
  useSubscription({ query: TrafficSubscription, variables: { ids: [instance.id] } }, (_previous, event) => {
    const rate = event.trafficUpdated.instances.find((i) => i.instanceId === instance.id);
    if (rate) {
      buffer.current.push(seconds(event.trafficUpdated.at), [rate.rxBps, rate.txBps]);
      redraw();
    }
    return event;
  });
  // new views (no copy) once per frame with new samples: the chart redraws on a new `data`
  const liveColumns = useMemo(() => buffer.current.columns(), [version]);
  const latest = buffer.current.latest();

  const history = data?.instance?.traffic.history;
  const historyColumns = useMemo(
    (): [number[], number[], number[]] =>
      history ? [history.map((p) => seconds(p.at)), history.map((p) => p.rxBps), history.map((p) => p.txBps)] : [[], [], []],
    [history],
  );
  const period = data?.instance?.traffic.period;

  return (
    <div>
      <h2>Network traffic</h2>
      <p className="hint">Counted on the host (never inside the instance); rates in bits per second.</p>
      {error && <p className="form-error">{error.message}</p>}
      <p className="live-now" data-rx-bps={latest?.values[0] ?? ''} data-tx-bps={latest?.values[1] ?? ''} aria-live="off">
        Now: received <strong>{latest ? formatBitRate(latest.values[0]!) : '—'}</strong>, sent{' '}
        <strong>{latest ? formatBitRate(latest.values[1]!) : '—'}</strong>
        {!latest && ' (no report from the host yet)'}
      </p>
      <TrafficChart title="Live (last 10 minutes)" series={SERIES} data={liveColumns} windowSeconds={LIVE_SAMPLES} />
      <TrafficChart title="Last 24 hours (per minute)" series={SERIES} data={historyColumns} />
      {period && (
        <table aria-label="Billing period" className="period">
          <caption>
            This billing period: {new Date(period.start).toLocaleDateString()} – {new Date(period.end).toLocaleDateString()}
          </caption>
          <tbody>
            <tr>
              <th scope="row">Received</th>
              <td>{formatBytes(period.rxBytes)}</td>
              <th scope="row">95th percentile in</th>
              <td>{formatBitRate(period.rxP95Bps)}</td>
            </tr>
            <tr>
              <th scope="row">Sent</th>
              <td>{formatBytes(period.txBytes)}</td>
              <th scope="row">95th percentile out</th>
              <td>{formatBitRate(period.txP95Bps)}</td>
            </tr>
            <tr>
              <th scope="row">Total</th>
              <td>
                {formatBytes(period.totalBytes)} <small className="hint">(projected {formatBytes(period.projectedTotalBytes)})</small>
              </td>
              <th scope="row">95th percentile</th>
              <td>{formatBitRate(period.p95Bps)}</td>
            </tr>
            <tr>
              <th scope="row">Quota</th>
              <td colSpan={3}>
                <QuotaUsage period={period} />
              </td>
            </tr>
          </tbody>
        </table>
      )}
    </div>
  );
}
