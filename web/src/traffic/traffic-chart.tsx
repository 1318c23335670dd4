/** A uPlot time-series chart of bit rates (canvas), sized to its container, redrawn when its data changes. */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { CHART_HEIGHT, rateChartOptions, type ChartSeries } from './chart-options.js';

export type { ChartSeries } from './chart-options.js';

/**
 * The chart: `data` is uPlot's aligned columns (`[seconds, series…]`). A new `data` array is one
 * `setData` (no new chart); a new `series` list builds a new chart.
 */
export function TrafficChart({
  title,
  series,
  data,
  windowSeconds,
}: {
  title: string;
  series: readonly ChartSeries[];
  data: uPlot.AlignedData;
  /** Show this many seconds up to the latest sample (live charts). */
  windowSeconds?: number;
}) {
  const container = useRef<HTMLDivElement>(null);
  const chart = useRef<uPlot>(null);
  useEffect(() => {
    const element = container.current!;
    const plot = new uPlot(rateChartOptions(series, element.clientWidth || 600, title, windowSeconds), data, element);
    chart.current = plot;
    const observer = new ResizeObserver(() => plot.setSize({ width: element.clientWidth, height: CHART_HEIGHT }));
    observer.observe(element);
    return () => {
      observer.disconnect();
      plot.destroy();
      chart.current = null;
    };
    // data goes in through setData below; only the series make a new chart
  }, [series, title, windowSeconds]);
  useEffect(() => chart.current?.setData(data), [data]);
  return <div ref={container} className="chart" role="img" aria-label={title} />;
}
