/**
 * The Monitoring chart's frame time in Chromium (Debian's, through playwright-core): one live
 * sample per second pushed into the tab's ring buffer and drawn by uPlot, with 50 series against a
 * baseline of the tab's own 2 series (received, sent) measured in the same run. The page is the
 * real chart code (web/src/traffic) built by Vite into a temporary directory and served on
 * loopback. A frame is push + setData + uPlot's draw calls (`script`: what the page's main thread
 * spends per sample), and the same with the canvas forced to pixels (`raster`, a 1-pixel
 * getImageData: with --disable-gpu this is a software raster and a readback, far slower than the
 * compositor's own raster, so it is an upper bound, not what a user sees); each window holds 600
 * samples (10 minutes at 1 Hz) of random rates, the worst case for path length. The chart draws
 * its lines with its own builder (web/src/traffic/line-paths.ts); the same 50 series drawn by
 * uPlot's stock `linear` builder, what it used before, are measured in the same run. The target
 * row (MET / NOT MET) is the p95 of the 50-series frame (script) under 8 ms.
 *
 *   npx tsx bench/ui-chart.ts      (chromium at /usr/bin/chromium or GATEHOUSE_CHROMIUM)
 *     BENCH_CHART_SERIES=50 BENCH_CHART_SAMPLES=600 BENCH_CHART_FRAMES=60 BENCH_CHART_ROUNDS=2
 *     BENCH_CHART_RASTER=0             skip the raster readback (minutes at 50 series under --disable-gpu)
 *     BENCH_CHART_PROFILE=out.cpuprofile  a V8 CPU profile of the 50-series rounds with the chart's builder
 *                                      (open in Chromium's DevTools; the page is then built unminified) and
 *                                      the ten functions with the most self time printed
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { build } from 'vite';

const HERE = fileURLToPath(new URL('./ui-chart/', import.meta.url));
const SERIES = Number(process.env.BENCH_CHART_SERIES ?? 50);
const SAMPLES = Number(process.env.BENCH_CHART_SAMPLES ?? 600);
const FRAMES = Number(process.env.BENCH_CHART_FRAMES ?? 60);
const ROUNDS = Number(process.env.BENCH_CHART_ROUNDS ?? 2);
const RASTER = process.env.BENCH_CHART_RASTER !== '0';
const PROFILE = process.env.BENCH_CHART_PROFILE;
const BASELINE_SERIES = 2;
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

/** The part of a V8 CPU profile (CDP Profiler.Profile) read here. */
interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples?: number[];
  timeDeltas?: number[];
}

/** Self time per function (name, url:line) summed over the profiles, largest first. */
function topSelfTime(profiles: Profile[]): [string, number][] {
  const totals = new Map<string, number>();
  for (const profile of profiles) {
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const deltas = profile.timeDeltas ?? [];
    (profile.samples ?? []).forEach((id, i) => {
      const frame = byId.get(id)!.callFrame;
      const name = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').pop()}:${frame.lineNumber + 1}`;
      totals.set(name, (totals.get(name) ?? 0) + (deltas[i + 1] ?? 0) / 1000);
    });
  }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const out = mkdtempSync(join(tmpdir(), 'gh-chart-bench-'));
await build({ root: HERE, logLevel: 'warn', build: { outDir: out, emptyOutDir: true, target: 'es2022', minify: !PROFILE } });
const server = createServer((req, res) => {
  const path = normalize(new URL(req.url ?? '/', 'http://x').pathname === '/' ? '/index.html' : new URL(req.url!, 'http://x').pathname);
  try {
    const body = readFileSync(join(out, path));
    res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const { port } = server.address() as { port: number };
const profile = mkdtempSync(join(tmpdir(), 'gh-chart-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.GATEHOUSE_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 800 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
  page.on('console', (m) => console.error(`page console (${m.type()}): ${m.text()}`));
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.waitForFunction(() => document.title === 'ready', undefined, { timeout: 30_000 });
  console.error('page ready; warming up');
  type Times = { script: number[]; raster: number[] };
  type Lines = 'direct' | 'linear';
  const run = (series: number, lines: Lines) =>
    page.evaluate(
      ([s, n, f, r, l]) =>
        (window as unknown as { runChartBench(s: number, n: number, f: number, r: boolean, l: Lines): Promise<Times> }).runChartBench(s, n, f, r, l),
      [series, SAMPLES, FRAMES, RASTER, lines] as const,
    );
  const cdp = PROFILE ? await context.newCDPSession(page) : undefined;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
  }
  // the runs: [series, lines]; the baseline (2 series) and the target (50) with the chart's builder, and the 50 with uPlot's
  const RUNS: [number, Lines][] = [
    [BASELINE_SERIES, 'direct'],
    [SERIES, 'direct'],
    [SERIES, 'linear'],
  ];
  const all = new Map(RUNS.map(([s, l]) => [`${s} ${l}`, { script: [] as number[], raster: [] as number[] }]));
  for (const [series, lines] of RUNS.slice(1)) await run(series, lines); // warm-up (JIT)
  const profiles: Profile[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // rotate the order so that none always runs on a warmer page
    const order = RUNS.map((_, i) => RUNS[(i + round) % RUNS.length]!);
    for (const [series, lines] of order) {
      const profiled = cdp !== undefined && series === SERIES && lines === 'direct';
      if (profiled) await cdp.send('Profiler.start');
      const times = await run(series, lines);
      if (profiled) profiles.push((await cdp.send('Profiler.stop')).profile as Profile);
      all.get(`${series} ${lines}`)!.script.push(...times.script);
      all.get(`${series} ${lines}`)!.raster.push(...times.raster);
    }
  }
  const times = (series: number, lines: Lines) => all.get(`${series} ${lines}`)!;
  const line = (series: number, lines: Lines) => {
    const t = times(series, lines);
    return `${String(series).padStart(3)} series × ${SAMPLES} samples, ${lines === 'direct' ? "the chart's line builder" : "uPlot's linear builder (before)"}: script median ${percentile(t.script, 50).toFixed(2)} ms, p95 ${percentile(t.script, 95).toFixed(2)} ms${RASTER ? `; with raster median ${percentile(t.raster, 50).toFixed(2)} ms, p95 ${percentile(t.raster, 95).toFixed(2)} ms` : ''}`;
  };
  console.log(
    `chart frame time in Chromium (${ROUNDS} rounds × ${FRAMES} frames each; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')})`,
  );
  for (const [series, lines] of RUNS) console.log(line(series, lines));
  const median = (series: number, lines: Lines) => percentile(times(series, lines).script, 50);
  const p95 = percentile(times(SERIES, 'direct').script, 95);
  if (PROFILE && profiles.length > 0) {
    writeFileSync(PROFILE, JSON.stringify(profiles[0]));
    console.log(`profile of the ${SERIES}-series rounds written to ${PROFILE}; most self time:`);
    for (const [name, ms] of topSelfTime(profiles).slice(0, 10)) console.log(`  ${ms.toFixed(1).padStart(8)} ms  ${name}`);
  }
  console.log(`ratio ${SERIES} / ${BASELINE_SERIES} series (median script): ${(median(SERIES, 'direct') / median(BASELINE_SERIES, 'direct')).toFixed(2)}×`);
  console.log(
    `ratio uPlot's linear / the chart's builder at ${SERIES} series: median ${(median(SERIES, 'linear') / median(SERIES, 'direct')).toFixed(2)}×, p95 ${(percentile(times(SERIES, 'linear').script, 95) / p95).toFixed(2)}×`,
  );
  console.log(
    `[ui-chart] frame at ${SERIES} series × ${SAMPLES} samples, p95 < 8 ms: ${p95 < 8 && SERIES >= 50 ? 'MET' : 'NOT MET'} (p95 ${p95.toFixed(2)} ms, median ${median(SERIES, 'direct').toFixed(2)} ms; ${BASELINE_SERIES} series median ${median(BASELINE_SERIES, 'direct').toFixed(2)} ms; uPlot's linear builder p95 ${percentile(times(SERIES, 'linear').script, 95).toFixed(2)} ms; load average ${loadavg()[0]!.toFixed(2)})`,
  );
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
}
