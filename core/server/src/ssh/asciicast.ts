/**
 * A terminal session written as an asciicast v2 file (https://docs.asciinema.org/manual/asciicast/v2/):
 * a header line (JSON: version 2, width, height, timestamp, title, env and the Gatehouse session's
 * names), then one JSON array a line: `[seconds since the start, "o", text]` for output,
 * `[seconds, "r", "COLSxROWS"]` for a resize. A file is capped: the event that would pass the cap
 * is replaced by a marker `[seconds, "m", "recording stopped: …"]` and nothing more is written.
 */
import { createWriteStream, type WriteStream } from 'node:fs';

/** What a recording's header says about its session, besides the asciicast fields. */
export interface RecordingSubject {
  /** The recording's id (its file name without `.cast`). */
  id: string;
  userId: string;
  userName: string;
  instanceId: string;
  instanceName: string;
  /** The login name on the instance. */
  username: string;
}

/** The header line of a recording. */
export interface AsciicastHeader {
  version: 2;
  width: number;
  height: number;
  /** Unix seconds of the start. */
  timestamp: number;
  title: string;
  env: { TERM: string };
  gatehouse: RecordingSubject;
}

/** Room kept under the cap for the final marker event. */
const MARKER_ROOM = 200;

/** Writes one session's asciicast v2 file. */
export class AsciicastRecorder {
  private readonly file: WriteStream;
  private readonly started = process.hrtime.bigint();
  private written = 0;
  private stopped = false;
  private capped = false;
  /** Resolves once the file is closed. */
  readonly closed: Promise<void>;

  constructor(
    path: string,
    subject: RecordingSubject,
    size: { cols: number; rows: number },
    /** Most bytes of the file (header included). */
    private readonly maxBytes: number,
  ) {
    this.file = createWriteStream(path, { flags: 'wx', mode: 0o600 });
    this.closed = new Promise((resolve) => this.file.once('close', () => resolve()));
    // a failed write (disk full, the directory gone) ends the recording, never the terminal
    this.file.on('error', () => (this.stopped = true));
    const header: AsciicastHeader = {
      version: 2,
      width: size.cols,
      height: size.rows,
      timestamp: Math.floor(Date.now() / 1000),
      title: `${subject.username}@${subject.instanceName}`,
      env: { TERM: 'xterm-256color' },
      gatehouse: subject,
    };
    this.line(JSON.stringify(header));
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.written;
  }

  /** Whether the cap stopped the recording. */
  get truncated(): boolean {
    return this.capped;
  }

  /** Terminal output (whole UTF-8 characters). */
  output(data: Buffer): void {
    this.event('o', data.toString('utf8'));
  }

  /** A resize of the terminal. */
  resize(cols: number, rows: number): void {
    this.event('r', `${cols}x${rows}`);
  }

  /** Ends the file; resolves once it is closed. */
  close(): Promise<void> {
    this.stopped = true;
    if (!this.file.closed && !this.file.writableEnded) this.file.end();
    return this.closed;
  }

  private event(kind: 'o' | 'r', data: string): void {
    if (this.stopped) return;
    const seconds = Number(process.hrtime.bigint() - this.started) / 1e9;
    const line = JSON.stringify([Number(seconds.toFixed(6)), kind, data]);
    if (this.written + Buffer.byteLength(line) + 1 > this.maxBytes - MARKER_ROOM) {
      this.line(JSON.stringify([Number(seconds.toFixed(6)), 'm', `recording stopped: the size cap of ${this.maxBytes} bytes was reached`]));
      this.stopped = true;
      this.capped = true;
      return;
    }
    this.line(line);
  }

  private line(text: string): void {
    const bytes = Buffer.from(`${text}\n`, 'utf8');
    this.written += bytes.length;
    this.file.write(bytes);
  }
}
