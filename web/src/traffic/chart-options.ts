/** uPlot options for the traffic charts (no React: the chart benchmark builds them too). */
import type uPlot from 'uplot';
import { directLinePaths } from './line-paths.js';
import { formatBitRate } from './units.js';

/** One line of the chart. */
export interface ChartSeries {
  label: string;
  color: string;
}

/** The charts' height in CSS pixels. */
export const CHART_HEIGHT = 220;

/** uPlot's options for rate series on a time axis. */
export function rateChartOptions(series: readonly ChartSeries[], width: number, title: string, windowSeconds?: number): uPlot.Options {
  // one builder for all the lines: it maps the time column to pixels once per frame
  const paths = directLinePaths();
  return {
    title,
    width,
    height: CHART_HEIGHT,
    series: [
      {},
      ...series.map((s) => ({
        label: s.label,
        stroke: s.color,
        width: 1.5,
        paths,
        value: (_u: uPlot, v: number | null) => (v === null ? '—' : formatBitRate(v)),
      })),
    ],
    // time labels ("15:26:30") are about 55 px wide: 80 px between x ticks keeps neighbours apart at any width
    axes: [{ space: 80 }, { size: 80, values: (_u: uPlot, ticks: number[]) => ticks.map(formatBitRate) }],
    scales: {
      // a live chart shows a fixed window ending at its latest sample, so that it scrolls rather than stretches
      ...(windowSeconds ? { x: { range: (_u: uPlot, _min: number, max: number) => [max - windowSeconds, max] } } : {}),
      y: { range: (_u: uPlot, _min: number, max: number) => [0, Math.max(max, 1000) * 1.1] },
    },
  };
}
