/**
 * A strict RFC 4180 CSV reader for bulk imports: comma-separated, optional UTF-8 BOM, LF or CRLF
 * line ends, double-quoted fields with `""` escapes. Malformed input is reported with its line
 * number instead of being guessed at.
 */

/** One record and the line it starts on (1-based; the header is line 1). */
export interface CsvRecord {
  line: number;
  fields: string[];
}

/** A syntax error at a line. */
export interface CsvSyntaxError {
  line: number;
  problem: string;
}

/** Splits CSV text into records; blank lines are skipped. */
export function parseCsv(text: string): { records: CsvRecord[]; errors: CsvSyntaxError[] } {
  const records: CsvRecord[] = [];
  const errors: CsvSyntaxError[] = [];
  for (const r of csvRecords(text)) {
    if ('problem' in r) errors.push(r);
    else records.push(r);
  }
  return { records, errors };
}

/**
 * The records and syntax errors of CSV text one at a time, in file order, so a caller with a large
 * file can yield between them (parsing 1 MB at once holds the event loop for ~50 ms).
 */
export function* csvRecords(text: string): Generator<CsvRecord | CsvSyntaxError> {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  while (i < text.length) {
    const startLine = line;
    const fields: string[] = [];
    let field = '';
    let broken: string | undefined;
    for (;;) {
      if (text[i] === '"') {
        i++;
        let closed = false;
        while (i < text.length) {
          const c = text[i]!;
          if (c === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            closed = true;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
        if (!closed) broken ??= 'has a quoted field that is never closed';
        if (i < text.length && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') broken ??= 'has characters after a closing quote';
      }
      // the unquoted part in one piece (a string per character was most of the parser's garbage)
      const from = i;
      while (i < text.length && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') {
        if (text[i] === '"') broken ??= 'has a quote inside an unquoted field';
        i++;
      }
      if (i > from) field += text.slice(from, i);
      fields.push(field);
      field = '';
      if (text[i] === ',') {
        i++;
        continue;
      }
      break;
    }
    if (text[i] === '\r') i++;
    if (text[i] === '\n') i++;
    line++;
    if (broken) yield { line: startLine, problem: broken };
    else if (!(fields.length === 1 && fields[0] === '')) yield { line: startLine, fields };
  }
}

/** Quotes a field when it needs it. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) || value !== value.trim() ? `"${value.replace(/"/g, '""')}"` : value;
}

// A spreadsheet evaluates a cell that starts with one of these as a formula (OWASP: CSV injection),
// also after leading quotes it strips itself; one more quote makes it text.
const FORMULA_START = /^'*[=+\-@\t\r]/;
const ESCAPED_FORMULA = /^'+[=+\-@\t\r]/;

/** A field for a file people open in spreadsheets: formula-like text gets a leading `'`, then quoting as needed. */
export function csvCell(value: string): string {
  return csvField(FORMULA_START.test(value) ? `'${value}` : value);
}

/** The value of a cell `csvCell` wrote: one leading `'` before formula-like text is dropped, so export → import is exact. */
export function csvCellValue(raw: string): string {
  return ESCAPED_FORMULA.test(raw) ? raw.slice(1) : raw;
}
