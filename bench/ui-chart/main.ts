/**
 * The page of bench/ui-chart.ts: the Monitoring tab's chart code (SeriesBuffer, rateChartOptions,
 * uPlot) with `series` live series, driven one sample per simulated second; `lines` picks the
 * chart's own line builder (`direct`) or uPlot's stock `linear` one (what the chart used before),
 * so that both are measured in one run.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { rateChartOptions } from '../../web/src/traffic/chart-options.js';
import { SeriesBuffer } from '../../web/src/traffic/series-buffer.js';

/** Frame times of one run, in milliseconds: `script` (push + setData + draw calls), `raster` (also the canvas flushed to pixels). */
interface FrameTimes {
  script: number[];
  raster: number[];
}

async function run(series: number, samples: number, frames: number, raster: boolean, lines: 'direct' | 'linear'): Promise<FrameTimes> {
  const element = document.getElementById('chart')!;
  element.replaceChildren();
  const buffer = new SeriesBuffer(series, samples);
  const rates = () => Array.from({ length: series }, () => Math.random() * 1e8);
  // a full window: the steady state of a chart left open for its window's length at 1 Hz
  for (let t = 1; t <= samples; t++) buffer.push(t, rates());
  const labels = Array.from({ length: series }, (_, i) => ({ label: `nic${i}`, color: `hsl(${(i * 137) % 360} 60% 45%)` }));
  const options = rateChartOptions(labels, 1200, 'bench', samples);
  if (lines === 'linear') for (const s of options.series.slice(1)) s.paths = uPlot.paths.linear!();
  const chart = new uPlot(options, buffer.columns(), element);
  console.info(`chart of ${series} series made (${lines} lines)`);
  const pixel = chart.ctx;
  const times: FrameTimes = { script: [], raster: [] };
  for (let f = 0; f < frames; f++) {
    const start = performance.now();
    buffer.push(samples + f + 1, rates());
    // batch: uPlot commits (and draws) before returning instead of in a microtask
    chart.batch(() => chart.setData(buffer.columns()));
    const drawn = performance.now();
    if (raster) pixel.getImageData(0, 0, 1, 1); // makes the canvas rasterise the frame's paths now
    const rastered = performance.now();
    times.script.push(drawn - start);
    times.raster.push(rastered - start);
    if ((f + 1) % 10 === 0)
      console.info(`${series} series: frame ${f + 1}, last ${(drawn - start).toFixed(1)} ms script, ${(rastered - start).toFixed(1)} ms with raster`);
    // the next sample arrives later: yield to the browser between frames (a timer: headless Chromium may not run animation frames)
    await new Promise((r) => setTimeout(r, 0));
  }
  chart.destroy();
  return times;
}

(window as unknown as { runChartBench: typeof run }).runChartBench = run;
document.title = 'ready';
