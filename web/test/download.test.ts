/** An export is saved as a file: its name, and the Blob behind the link the panel clicks. */
import { resolveObjectURL } from 'node:buffer';
import { describe, expect, it, vi } from 'vitest';
import { downloadText, exportFileName } from '../src/download.js';

describe('exportFileName', () => {
  it('keeps a plain name', () => {
    expect(exportFileName('port-forwards', 'sandbox', 'csv')).toBe('port-forwards-sandbox.csv');
  });

  it('reduces what a file system might refuse to dashes, and lower-cases', () => {
    expect(exportFileName('port-forwards', 'Host A/../b: "x"', 'csv')).toBe('port-forwards-host-a-..-b-x.csv');
    expect(exportFileName('port-forwards', '.hidden', 'csv')).toBe('port-forwards-hidden.csv');
  });

  it('names a file whose name has nothing left "export"', () => {
    expect(exportFileName('port-forwards', '???', 'csv')).toBe('port-forwards-export.csv');
  });
});

describe('downloadText', () => {
  it('clicks a link to a Blob of the text with the file name, removes the link, then revokes the URL', async () => {
    vi.useFakeTimers();
    try {
      const events: string[] = [];
      const link = { href: '', download: '', click: () => events.push('click'), remove: () => events.push('remove') };
      const doc = { createElement: () => link, body: { append: () => events.push('append') } } as unknown as Document;
      const url = downloadText('protocol,host_port\r\ntcp,8080\r\n', 'port-forwards-sandbox.csv', 'text/csv', doc);
      expect(link).toMatchObject({ href: url, download: 'port-forwards-sandbox.csv' });
      expect(events).toEqual(['append', 'click', 'remove']);
      const blob = resolveObjectURL(url)!;
      expect(blob.type).toBe('text/csv');
      expect(await blob.text()).toBe('protocol,host_port\r\ntcp,8080\r\n');
      vi.runAllTimers();
      expect(resolveObjectURL(url)).toBeUndefined();
    } finally {
      vi.useRealTimers();
    }
  });
});
