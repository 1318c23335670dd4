/**
 * A line path builder for uPlot that strokes each series straight into the chart's canvas, for
 * charts with many live series. uPlot's own `linear` builder makes a `Path2D` per series and a
 * second one for its clip, and maps every x to pixels again for every series; at 50 series × 600
 * samples redrawn once a second that was most of a frame (bench/ui-chart.ts, its V8 profile). Here
 * the x pixels are computed once per frame for all series, each series is one `beginPath`/`stroke`
 * on the context, and a pixel column holding several samples is drawn as where the line enters it,
 * its extremes and where it leaves (no peak is lost, the path stays bounded by the plot's width).
 */
import uPlot from 'uplot';

/** Where a traced line goes: the canvas context, or a recorder in the tests. */
export interface PathSink {
  moveTo(x: number, y: number): void;
  lineTo(x: number, y: number): void;
}

/**
 * Traces the line through the samples `from`…`to` (inclusive) into `sink`, in pixels: `xs` are
 * whole device pixels, a sample's y is `yOrigin + yPerUnit × value` rounded to a pixel, and a
 * null (or missing, or NaN) value breaks the line. Consecutive samples in one pixel column become
 * at most four points: the first, the column's lowest and highest, and the last, so the column is
 * covered from its minimum to its maximum and the line leaves it at the last sample. Returns the
 * number of points given to `sink`.
 */
export function traceLine(
  sink: PathSink,
  xs: ArrayLike<number>,
  values: ArrayLike<number | null | undefined>,
  from: number,
  to: number,
  yOrigin: number,
  yPerUnit: number,
): number {
  let points = 0;
  let penDown = false;
  // the pixel column being gathered: its x, how many samples, and their first, lowest, highest and last y
  let column = NaN;
  let count = 0;
  let first = 0;
  let low = 0;
  let high = 0;
  let last = 0;
  const flush = () => {
    if (count === 0) return;
    if (penDown) sink.lineTo(column, first);
    else sink.moveTo(column, first);
    penDown = true;
    points++;
    if (count > 1) {
      // low ≤ first, last ≤ high: down to the lowest, up to the highest, back to the last
      let at = first;
      for (const y of [low, high, last]) {
        if (y !== at) {
          sink.lineTo(column, y);
          points++;
          at = y;
        }
      }
    }
    count = 0;
  };
  for (let i = from; i <= to; i++) {
    const value = values[i];
    if (value === null || value === undefined || Number.isNaN(value)) {
      flush();
      penDown = false;
      continue;
    }
    const x = xs[i]!;
    const y = Math.round(yOrigin + yPerUnit * value);
    if (x !== column || count === 0) {
      flush();
      column = x;
      first = low = high = last = y;
      count = 1;
    } else {
      if (y < low) low = y;
      else if (y > high) high = y;
      last = y;
      count++;
    }
  }
  flush();
  return points;
}

/**
 * The builder (share one among a chart's series: it keeps that chart's x pixels for the frame).
 * It draws and returns null, so uPlot keeps no path and calls it on every redraw; it assumes what
 * the rate charts use: linear scales, x horizontal and growing to the right.
 */
export function directLinePaths(): uPlot.Series.PathBuilder {
  // x pixels of the last frame's x column, valid while that column, the x scale and the plot box are the same
  let xs = new Float64Array(0);
  let source: unknown = null;
  let xMin = NaN;
  let xMax = NaN;
  let xLeft = NaN;
  let xWidth = NaN;
  return (u, seriesIdx, idx0, idx1) => {
    const { left, top, width, height } = u.bbox;
    const scaleX = u.scales.x!;
    const series = u.series[seriesIdx]!;
    const scaleY = u.scales[series.scale ?? 'y']!;
    if (scaleX.min == null || scaleX.max == null || scaleY.min == null || scaleY.max == null) return null;
    if (scaleX.max === scaleX.min || scaleY.max === scaleY.min) return null;
    const times = u.data[0];
    if (times !== source || scaleX.min !== xMin || scaleX.max !== xMax || left !== xLeft || width !== xWidth) {
      if (xs.length < times.length) xs = new Float64Array(times.length);
      const perUnit = width / (scaleX.max - scaleX.min);
      for (let i = 0; i < times.length; i++) xs[i] = Math.round(left + (times[i]! - scaleX.min) * perUnit);
      [source, xMin, xMax, xLeft, xWidth] = [times, scaleX.min, scaleX.max, left, width];
    }
    const yPerUnit = -height / (scaleY.max - scaleY.min);
    const yOrigin = top + height - scaleY.min * yPerUnit;
    const ctx = u.ctx;
    const lineWidth = (series.width ?? 1) * (uPlot.pxRatio ?? 1);
    // as uPlot does: a line of odd width is shifted half a pixel onto the pixel grid, and the clip
    // leaves room for half the line around the plot (a line at the edge, the latest point, is drawn whole)
    const offset = Number(series.pxAlign ?? 1) === 1 ? (lineWidth % 2) / 2 : 0;
    // uPlot caches the context's style: everything set here is undone by restore()
    ctx.save();
    // shifted before the clip, as uPlot does, so that a line on the plot's edge keeps its whole width
    ctx.translate(offset, offset);
    ctx.beginPath();
    // the samples just outside the window (uPlot passes them so that the line reaches the edges) stay outside
    ctx.rect(left - lineWidth / 2, top - lineWidth / 2, width + lineWidth, height + lineWidth);
    ctx.clip();
    ctx.beginPath();
    traceLine(ctx, xs, u.data[seriesIdx]!, idx0, idx1, yOrigin, yPerUnit);
    const stroke = series.stroke;
    ctx.strokeStyle = (typeof stroke === 'function' ? stroke(u, seriesIdx) : stroke) ?? '#000';
    // uPlot's own defaults for a line (its pxRatio is undefined outside a browser)
    ctx.lineWidth = lineWidth;
    ctx.lineJoin = 'round';
    ctx.lineCap = series.cap ?? 'butt';
    ctx.setLineDash(series.dash ?? []);
    ctx.stroke();
    ctx.restore();
    return null;
  };
}
