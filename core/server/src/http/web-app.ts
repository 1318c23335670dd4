/**
 * Serves a built single-page app (the web UI's `dist/`) beside the API: files by path, hashed
 * assets cached for a year, `index.html` revalidated on every load and returned for client-side
 * routes, all under a Content-Security-Policy that allows no inline script. The directory is given
 * by the composition root; the controller does not know which app it serves.
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';

/** The policy of every response of the app: scripts, styles and connections only from this origin. */
export const WEB_APP_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  // graphql-ws connects to the same origin (ws: or wss:)
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json',
};

/** Vite names every file under assets/ after its content hash, so they never change. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

/** A handler for requests outside the API; it answers every request it is given. */
export type WebAppHandler = (request: IncomingMessage, response: ServerResponse) => Promise<void>;

function commonHeaders(response: ServerResponse): void {
  response.setHeader('Content-Security-Policy', WEB_APP_CSP);
  response.setHeader('X-Content-Type-Options', 'nosniff');
  response.setHeader('Referrer-Policy', 'no-referrer');
}

function plain(response: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  response.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...extra });
  response.end(text);
}

/** The file under `root` a URL path names, or undefined when it would leave `root` or is malformed. */
export function fileOfPath(root: string, urlPath: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const file = resolve(root, `.${decoded}`);
  return file === root || file.startsWith(root + sep) ? file : undefined;
}

/** Creates the handler serving the app built in `dir` (which must contain index.html). */
export function createWebAppHandler(dir: string): WebAppHandler {
  const root = resolve(dir);
  const indexFile = join(root, 'index.html');
  return async (request, response) => {
    commonHeaders(response);
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      plain(response, 405, 'Method Not Allowed\n', { Allow: 'GET, HEAD' });
      return;
    }
    // the path as sent: URL parsing would resolve dot segments before fileOfPath could refuse them
    const path = (request.url ?? '/').split('?')[0]!;
    const file = fileOfPath(root, path);
    if (!file) {
      plain(response, 400, 'Bad Request\n');
      return;
    }
    const info = file === root ? undefined : await stat(file).catch(() => undefined);
    if (info?.isFile() && file !== indexFile) {
      response.writeHead(200, {
        'Content-Type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
        'Content-Length': info.size,
        'Cache-Control': path.startsWith('/assets/') ? IMMUTABLE : 'no-cache',
      });
      if (request.method === 'HEAD') response.end();
      else createReadStream(file).pipe(response);
      return;
    }
    // a missing asset or file is a 404; any other path is a client-side route of the app
    if (path.startsWith('/assets/') || (extname(path) !== '' && file !== indexFile)) {
      plain(response, 404, 'Not Found\n');
      return;
    }
    const html = await readFile(indexFile).catch(() => undefined);
    if (!html) {
      plain(response, 503, `The web UI is not built: ${indexFile} is missing (npm run build -w @gatehouse/web).\n`);
      return;
    }
    response.writeHead(200, { 'Content-Type': CONTENT_TYPES['.html']!, 'Content-Length': html.length, 'Cache-Control': 'no-cache' });
    response.end(request.method === 'HEAD' ? undefined : html);
  };
}
