/**
 * A bounded ring buffer of samples of several series on one time axis, for the live charts: a push
 * costs O(series) whatever the length, memory never exceeds twice `capacity` samples, and
 * `columns()` gives uPlot's column layout (`[times, series0, series1, …]`) oldest first without
 * copying: each sample is written twice, at its slot and `capacity` further, so the window in
 * order is always one contiguous run of the array and a column is a `subarray` view of it (a
 * chart frame used to copy every column, 51 × 600 numbers at 50 series).
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
    this.times = new Float64Array(2 * capacity);
    this.values = Array.from({ length: series }, () => new Float64Array(2 * capacity));
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
    const mirror = slot + this.capacity;
    this.times[slot] = this.times[mirror] = time;
    for (let s = 0; s < this.series; s++) this.values[s]![slot] = this.values[s]![mirror] = values[s]!;
  }

  /** The latest sample, or undefined when empty. */
  latest(): { time: number; values: number[] } | undefined {
    if (this.count === 0) return undefined;
    const slot = this.slotOf(this.count - 1);
    return { time: this.times[slot]!, values: this.values.map((v) => v[slot]!) };
  }

  /**
   * The samples oldest first, as uPlot's aligned data: `[times, series0, series1, …]`, views of the
   * buffer (O(series), no copy) that stay valid until the next `push` or `clear`.
   */
  columns(): [Float64Array, ...Float64Array[]] {
    const end = this.start + this.count;
    return [this.times.subarray(this.start, end), ...this.values.map((column) => column.subarray(this.start, end))];
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
