/** The CSV reader: BOM, CRLF, quotes and broken rows, on known cases and generated tables. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { csvField, parseCsv } from '../src/support/csv.js';

describe('parseCsv', () => {
  it('reads a BOM, CRLF line ends, quoted commas, escaped quotes and quoted newlines', () => {
    const { records, errors } = parseCsv('\uFEFFprotocol,note\r\ntcp,"a, b"\r\nudp,"say ""hi"""\r\n\r\ntcp,"two\nlines"\r\n');
    expect(errors).toEqual([]);
    expect(records).toEqual([
      { line: 1, fields: ['protocol', 'note'] },
      { line: 2, fields: ['tcp', 'a, b'] },
      { line: 3, fields: ['udp', 'say "hi"'] },
      { line: 5, fields: ['tcp', 'two\nlines'] },
    ]);
  });

  it('reports an unclosed quote, text after a closing quote and a stray quote with their lines', () => {
    expect(parseCsv('a,b\n"x,y\n').errors).toEqual([{ line: 2, problem: 'has a quoted field that is never closed' }]);
    expect(parseCsv('a,b\n"x"y,z\nok,1\n')).toEqual({
      records: [
        { line: 1, fields: ['a', 'b'] },
        { line: 3, fields: ['ok', '1'] },
      ],
      errors: [{ line: 2, problem: 'has characters after a closing quote' }],
    });
    expect(parseCsv('a,b\nx"y,z\n').errors).toEqual([{ line: 2, problem: 'has a quote inside an unquoted field' }]);
  });

  it('reads back every table csvField writes', () => {
    const cell = fc.string({ maxLength: 12 });
    fc.assert(
      fc.property(fc.array(fc.array(cell, { minLength: 2, maxLength: 4 }), { minLength: 1, maxLength: 8 }), (table) => {
        const rows = table.map((r) => r.map((c) => (c === '' ? 'x' : c)));
        const text = rows.map((r) => r.map(csvField).join(',')).join('\r\n');
        const { records, errors } = parseCsv(text);
        expect(errors).toEqual([]);
        expect(records.map((r) => r.fields)).toEqual(rows);
      }),
    );
  });
});
