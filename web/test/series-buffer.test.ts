/** The live chart's ring buffer: bounded, oldest first, never drawing backwards. */
import { describe, expect, it } from 'vitest';
import { SeriesBuffer } from '../src/traffic/series-buffer.js';

/** The columns as plain arrays (they are typed-array views). */
const plain = (buffer: SeriesBuffer) => buffer.columns().map((column) => Array.from(column));

describe('SeriesBuffer', () => {
  it('keeps the last `capacity` samples, oldest first, in uPlot column layout', () => {
    const buffer = new SeriesBuffer(2, 3);
    expect(plain(buffer)).toEqual([[], [], []]);
    expect(buffer.latest()).toBeUndefined();
    for (let t = 1; t <= 5; t++) buffer.push(t, [t * 10, t * 100]);
    expect(buffer.length).toBe(3);
    expect(plain(buffer)).toEqual([
      [3, 4, 5],
      [30, 40, 50],
      [300, 400, 500],
    ]);
    expect(buffer.latest()).toEqual({ time: 5, values: [50, 500] });
  });

  it('replaces the latest sample with one that is not newer (a replayed update)', () => {
    const buffer = new SeriesBuffer(1, 4);
    buffer.push(10, [1]);
    buffer.push(11, [2]);
    buffer.push(11, [3]);
    buffer.push(9, [4]);
    expect(plain(buffer)).toEqual([
      [10, 11],
      [1, 4],
    ]);
  });

  it('matches a plain array model over a long random run, and its memory stays bounded', () => {
    const capacity = 17;
    const buffer = new SeriesBuffer(3, capacity);
    const model: number[][] = [];
    let time = 0;
    // a fixed-seed generator, so that a failure can be replayed
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 5000; i++) {
      time += random() < 0.1 ? 0 : 1 + Math.floor(random() * 3);
      const values = [random(), random(), random()];
      if (model.length > 0 && time <= model.at(-1)![0]!) model[model.length - 1] = [model.at(-1)![0]!, ...values];
      else model.push([time, ...values]);
      if (model.length > capacity) model.shift();
      buffer.push(time, values);
      expect(buffer.length).toBe(model.length);
    }
    const columns = plain(buffer);
    expect(columns.length).toBe(4);
    expect(columns[0]).toEqual(model.map((row) => row[0]));
    for (let s = 1; s <= 3; s++) expect(columns[s]).toEqual(model.map((row) => row[s]));
  });

  it('gives views of its own storage, not copies: the columns of a full buffer share one buffer', () => {
    const buffer = new SeriesBuffer(2, 4);
    for (let t = 1; t <= 6; t++) buffer.push(t, [t, -t]);
    const [times, first] = buffer.columns();
    expect(Array.from(times!)).toEqual([3, 4, 5, 6]);
    expect(Array.from(first!)).toEqual([3, 4, 5, 6]);
    expect(times!.buffer).toBe(buffer.columns()[0]!.buffer);
    expect(times!.buffer.byteLength).toBe(2 * 4 * Float64Array.BYTES_PER_ELEMENT);
  });

  it('refuses a sample with the wrong number of values, and sizes that make no buffer', () => {
    const buffer = new SeriesBuffer(2, 2);
    expect(() => buffer.push(1, [1])).toThrow('expected 2 values, got 1');
    expect(() => new SeriesBuffer(0, 2)).toThrow('series must be a positive integer, got 0');
    expect(() => new SeriesBuffer(1, 0)).toThrow('capacity must be a positive integer, got 0');
    buffer.push(1, [1, 2]);
    buffer.clear();
    expect(buffer.length).toBe(0);
  });
});
