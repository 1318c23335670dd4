/** Files the panel hands to the browser to save (an export), built in the page: a Blob behind an object URL. */

/**
 * `<prefix>-<name>.<extension>` with the name reduced to what every file system accepts: lower
 * case letters, digits, `.`, `_` and `-` (runs of anything else become one `-`).
 */
export function exportFileName(prefix: string, name: string, extension: string): string {
  const safe = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '');
  return `${prefix}-${safe || 'export'}.${extension}`;
}

/**
 * Saves `text` as the file `fileName`: a Blob of `type`, an object URL for it, and a click on a
 * link with `download`; the URL is revoked once the browser has taken the click.
 */
export function downloadText(text: string, fileName: string, type: string, doc: Document = document): string {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = doc.createElement('a');
  link.href = url;
  link.download = fileName;
  doc.body.append(link);
  link.click();
  link.remove();
  // the click starts the download asynchronously; revoking in the same task may cancel it
  setTimeout(() => URL.revokeObjectURL(url), 0);
  return url;
}
