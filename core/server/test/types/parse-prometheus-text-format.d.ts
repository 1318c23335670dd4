/** The parser package ships no types: the part the tests use. */
declare module 'parse-prometheus-text-format' {
  /** Metric families of a Prometheus text exposition. */
  export default function parsePrometheusTextFormat(text: string): unknown[];
}
