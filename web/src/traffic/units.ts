/** Rates and byte counts as people read them (SI prefixes: networks count in powers of ten). */

const PREFIXES = ['', 'k', 'M', 'G', 'T', 'P'];

function scaled(value: number): { value: number; prefix: string } {
  let i = 0;
  let v = Math.abs(value);
  while (v >= 1000 && i < PREFIXES.length - 1) {
    v /= 1000;
    i++;
  }
  return { value: Math.sign(value) * v, prefix: PREFIXES[i]! };
}

function digits(value: number): string {
  return Math.abs(value) >= 100 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(Math.abs(value) >= 10 ? 1 : 2);
}

/** 1234567 → "1.23 Mbit/s". */
export function formatBitRate(bitsPerSecond: number): string {
  const { value, prefix } = scaled(bitsPerSecond);
  return `${digits(value)} ${prefix}bit/s`;
}

/** 1234567 → "1.23 MB". */
export function formatBytes(bytes: number): string {
  const { value, prefix } = scaled(bytes);
  return `${digits(value)} ${prefix}B`;
}
