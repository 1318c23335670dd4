/**
 * A bounded ring buffer of samples of several series on one time axis, for the live charts: a push
 * costs O(series) whatever the length, memory never exceeds `capacity` samples, and `columns()`
 * gives uPlot's column layout (`[times, series0, series1, …]`) oldest first.
 */

/** Samples of `series` series at up to `capacity` instants. */
export class SeriesBuffer {
  readonly capacity: number;
  readonly series: number;
  private readonly times: Float64Array;
  private readonly values: Float64Array[];
  private start = 0;
  private count = 0;

  constructor(series: number, capacity: number) {
    if (!Number.isInteger(series) || series < 1) throw new RangeError(`series must be a positive integer, got ${series}`);
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.series = series;
    this.capacity = capacity;
    this.times = new Float64Array(capacity);
    this.values = Array.from({ length: series }, () => new Float64Array(capacity));
  }

  /** How many samples are held. */
  get length(): number {
    return this.count;
  }

  /**
   * Adds one sample at `time` (seconds, uPlot's unit) with one value per series; the oldest goes
   * when full. A sample not newer than the latest replaces the latest (a replayed or reordered
   * update must not draw the line backwards).
   */
  push(time: number, values: readonly number[]): void {
    if (values.length !== this.series) throw new RangeError(`expected ${this.series} values, got ${values.length}`);
    let slot: number;
    if (this.count > 0 && time <= this.times[this.slotOf(this.count - 1)]!) {
      slot = this.slotOf(this.count - 1);
      time = this.times[slot]!;
    } else if (this.count < this.capacity) {
      slot = this.slotOf(this.count);
      this.count++;
    } else {
      slot = this.start;
      this.start = (this.start + 1) % this.capacity;
    }
    this.times[slot] = time;
    for (let s = 0; s < this.series; s++) this.values[s]![slot] = values[s]!;
  }

  /** The latest sample, or undefined when empty. */
  latest(): { time: number; values: number[] } | undefined {
    if (this.count === 0) return undefined;
    const slot = this.slotOf(this.count - 1);
    return { time: this.times[slot]!, values: this.values.map((v) => v[slot]!) };
  }

  /** The samples oldest first, as uPlot's aligned data: `[times, series0, series1, …]`. */
  columns(): [number[], ...number[][]] {
    const order = (column: Float64Array) => {
      const out = new Array<number>(this.count);
      for (let i = 0; i < this.count; i++) out[i] = column[this.slotOf(i)]!;
      return out;
    };
    return [order(this.times), ...this.values.map(order)];
  }

  /** Forgets every sample. */
  clear(): void {
    this.start = 0;
    this.count = 0;
  }

  private slotOf(index: number): number {
    return (this.start + index) % this.capacity;
  }
}
