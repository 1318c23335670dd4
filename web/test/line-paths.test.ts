/** The live chart's line builder: every sample's column drawn from its lowest to its highest value, the latest point at the plot's edge. */
import type uPlot from 'uplot';
import { describe, expect, it } from 'vitest';
import { directLinePaths, traceLine, type PathSink } from '../src/traffic/line-paths.js';

type Point = { op: 'moveTo' | 'lineTo'; x: number; y: number };

/** A sink that records the points it is given. */
function recorder(): PathSink & { points: Point[] } {
  const points: Point[] = [];
  return {
    points,
    moveTo: (x, y) => points.push({ op: 'moveTo', x, y }),
    lineTo: (x, y) => points.push({ op: 'lineTo', x, y }),
  };
}

/** A fixed-seed generator, so that a failure can be replayed. */
function seeded(seed: number): () => number {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

describe('traceLine', () => {
  it('draws one point per sample when each sample has its own pixel column, y mapped and rounded', () => {
    const sink = recorder();
    const n = traceLine(sink, [10, 12, 14, 16], [0, 5, 10, 2.4], 0, 3, 100, -2);
    expect(n).toBe(4);
    expect(sink.points).toEqual([
      { op: 'moveTo', x: 10, y: 100 },
      { op: 'lineTo', x: 12, y: 90 },
      { op: 'lineTo', x: 14, y: 80 },
      { op: 'lineTo', x: 16, y: 95 },
    ]);
  });

  it('draws only the samples from..to', () => {
    const sink = recorder();
    traceLine(sink, [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], 1, 3, 0, 1);
    expect(sink.points.map((p) => p.x)).toEqual([1, 2, 3]);
  });

  it('keeps at most four points per pixel column, covering its lowest and highest sample and leaving at the last', () => {
    const random = seeded(7);
    const samples = 5000;
    const columns = 37;
    const xs = Array.from({ length: samples }, (_, i) => Math.floor((i * columns) / samples));
    const values = Array.from({ length: samples }, () => random() * 1000);
    values[2222] = 5000; // one spike: decimation must not lose it
    const sink = recorder();
    const n = traceLine(sink, xs, values, 0, samples - 1, 0, 1);
    expect(n).toBe(sink.points.length);
    expect(sink.points.length).toBeLessThanOrEqual(4 * columns);
    for (let column = 0; column < columns; column++) {
      const inColumn = values.filter((_, i) => xs[i] === column).map((v) => Math.round(v));
      const drawn = sink.points.filter((p) => p.x === column).map((p) => p.y);
      expect(Math.min(...drawn)).toBe(Math.min(...inColumn));
      expect(Math.max(...drawn)).toBe(Math.max(...inColumn));
      expect(drawn[0]).toBe(inColumn[0]);
      expect(drawn.at(-1)).toBe(inColumn.at(-1));
    }
    expect(sink.points.map((p) => p.y)).toContain(5000);
    expect(sink.points.at(-1)).toEqual({ op: 'lineTo', x: columns - 1, y: Math.round(values.at(-1)!) });
    expect(sink.points.filter((p) => p.op === 'moveTo')).toHaveLength(1);
  });

  it('breaks the line at a missing sample and starts again after it, also inside one pixel column', () => {
    const sink = recorder();
    traceLine(sink, [0, 1, 2, 3, 3, 3, 4], [1, 2, null, 4, undefined, 6, 7], 0, 6, 0, 1);
    expect(sink.points).toEqual([
      { op: 'moveTo', x: 0, y: 1 },
      { op: 'lineTo', x: 1, y: 2 },
      { op: 'moveTo', x: 3, y: 4 },
      { op: 'moveTo', x: 3, y: 6 },
      { op: 'lineTo', x: 4, y: 7 },
    ]);
  });
});

/** A canvas context that records what is stroked: each stroke's style, width, shift and points, and the clip. */
function fakeContext() {
  const strokes: { style: unknown; width: number; shift: number[]; points: Point[] }[] = [];
  const clips: { rect: number[]; shift: number[] }[] = [];
  let path: Point[] = [];
  let rect: number[] = [];
  let shift = [0, 0];
  let depth = 0;
  const ctx = {
    strokeStyle: '' as unknown,
    lineWidth: 1,
    lineJoin: 'miter',
    lineCap: 'butt',
    save: () => depth++,
    restore: () => {
      depth--;
      shift = [0, 0];
    },
    translate: (x: number, y: number) => (shift = [x, y]),
    beginPath: () => (path = []),
    rect: (...r: number[]) => (rect = r),
    clip: () => clips.push({ rect, shift }),
    setLineDash: () => undefined,
    moveTo: (x: number, y: number) => path.push({ op: 'moveTo', x, y }),
    lineTo: (x: number, y: number) => path.push({ op: 'lineTo', x, y }),
    stroke: () => strokes.push({ style: ctx.strokeStyle, width: ctx.lineWidth, shift, points: path }),
  };
  return { ctx, strokes, clips, depth: () => depth };
}

/** The parts of a uPlot instance the builder reads. */
function fakeChart(data: number[][], xRange: [number, number], yMax: number) {
  const canvas = fakeContext();
  const chart = {
    ctx: canvas.ctx,
    bbox: { left: 100, top: 10, width: 600, height: 200 },
    scales: { x: { min: xRange[0], max: xRange[1] }, y: { min: 0, max: yMax } },
    series: [{}, ...data.slice(1).map((_, i) => ({ scale: 'y', width: 1.5, stroke: () => `color${i}` }))],
    data,
  };
  return { chart, canvas, u: chart as unknown as uPlot };
}

describe('directLinePaths', () => {
  it("strokes every series in its colour, clipped to the plot and half the line around it, the latest point at the plot's right edge", () => {
    const times = [0, 150, 300, 450, 600];
    const { u, chart, canvas } = fakeChart([times, [0, 50, 100, 50, 25], [100, 0, 0, 0, 100]], [0, 600], 100);
    const paths = directLinePaths();
    expect(paths(u, 1, 0, 4)).toBeNull();
    expect(paths(u, 2, 0, 4)).toBeNull();
    expect(canvas.strokes.map((s) => s.style)).toEqual(['color0', 'color1']);
    expect(canvas.strokes[0]!.width).toBe(1.5);
    // as uPlot: a line of odd width shifted onto the pixel grid (by width mod 2 / 2)
    expect(canvas.strokes[0]!.shift).toEqual([0.75, 0.75]);
    expect(canvas.strokes[0]!.points).toEqual([
      { op: 'moveTo', x: 100, y: 210 },
      { op: 'lineTo', x: 250, y: 110 },
      { op: 'lineTo', x: 400, y: 10 },
      { op: 'lineTo', x: 550, y: 110 },
      { op: 'lineTo', x: 700, y: 160 },
    ]);
    expect(canvas.strokes[1]!.points.at(-1)).toEqual({ op: 'lineTo', x: 700, y: 10 });
    // the clip is shifted too, so that a line on the plot's edge (the latest point) is drawn whole
    expect(canvas.clips).toEqual([
      { rect: [99.25, 9.25, 601.5, 201.5], shift: [0.75, 0.75] },
      { rect: [99.25, 9.25, 601.5, 201.5], shift: [0.75, 0.75] },
    ]);
    // the context's state is restored after each series (uPlot caches it)
    expect(canvas.depth()).toBe(0);
    expect(chart.series).toHaveLength(3);
  });

  it('maps x again when the window scrolls or the plot is resized, though the time column is the same', () => {
    const times = [10, 20, 30];
    const { u, chart, canvas } = fakeChart([times, [1, 2, 3]], [10, 30], 3);
    const paths = directLinePaths();
    paths(u, 1, 0, 2);
    chart.scales.x = { min: 0, max: 30 };
    paths(u, 1, 0, 2);
    chart.bbox = { ...chart.bbox, width: 300 };
    paths(u, 1, 0, 2);
    expect(canvas.strokes.map((s) => s.points.map((p) => p.x))).toEqual([
      [100, 400, 700],
      [300, 500, 700],
      [200, 300, 400],
    ]);
  });

  it('draws nothing on a scale with no extent (no samples yet)', () => {
    const { u, canvas } = fakeChart([[5], [1]], [5, 5], 3);
    expect(directLinePaths()(u, 1, 0, 0)).toBeNull();
    expect(canvas.strokes).toHaveLength(0);
  });
});
