/**
 * The controller serves a built single-page app beside the API: files by path with long caching
 * for hashed assets, index.html (revalidated) for client-side routes, a CSP without inline
 * scripts, and the API still at /graphql.
 */
import 'reflect-metadata';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileOfPath, WEB_APP_CSP } from '../src/http/web-app.js';
import { startController, type Controller } from '../src/server.js';
import { post } from '../src/testing/http.js';

/** A GET whose path is sent byte for byte. */
function rawGet(origin: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: hostname, port, path, method: 'GET' }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on('error', reject);
    request.end();
  });
}

const INDEX = '<!doctype html><title>app</title><script type="module" src="/assets/app-1a2b.js"></script>';

describe('the web app served by the controller', () => {
  let dir: string;
  let controller: Controller;
  let origin: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gh-web-'));
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), INDEX);
    writeFileSync(join(dir, 'assets', 'app-1a2b.js'), 'console.log(1)');
    writeFileSync(join(dir, 'robots.txt'), 'User-agent: *');
    writeFileSync(join(tmpdir(), 'gh-web-secret.txt'), 'secret');
    controller = await startController({ store: { kind: 'pglite' }, port: 0, webAppDir: dir });
    origin = new URL(controller.url).origin;
  }, 60_000);
  afterAll(async () => {
    await controller?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers / and client-side routes with index.html, revalidated, under a CSP without inline scripts', async () => {
    for (const path of ['/', '/instances/0190e1e0-0000-7000-8000-000000000000/forwards', '/audit?objectType=PortForward', '/index.html']) {
      const response = await fetch(origin + path);
      expect(response.status, path).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(response.headers.get('cache-control')).toBe('no-cache');
      expect(response.headers.get('content-security-policy')).toBe(WEB_APP_CSP);
      expect(await response.text()).toBe(INDEX);
    }
    expect(WEB_APP_CSP).toContain("script-src 'self'");
    expect(WEB_APP_CSP).not.toContain('unsafe-inline');
  });

  it('serves hashed assets with a year of immutable caching, other files revalidated', async () => {
    const asset = await fetch(`${origin}/assets/app-1a2b.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(asset.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await asset.text()).toBe('console.log(1)');
    const robots = await fetch(`${origin}/robots.txt`);
    expect(robots.headers.get('cache-control')).toBe('no-cache');
  });

  it('answers 404 for a missing asset or file, 405 for other methods, and never leaves its directory', async () => {
    expect((await fetch(`${origin}/assets/gone-9z.js`)).status).toBe(404);
    expect((await fetch(`${origin}/favicon.png`)).status).toBe(404);
    expect((await fetch(`${origin}/`, { method: 'POST', body: 'x' })).status).toBe(405);
    // sent as is (fetch would normalise the dot segments away)
    for (const path of ['/%2e%2e/gh-web-secret.txt', '/../gh-web-secret.txt', '/assets/..%2f..%2fgh-web-secret.txt']) {
      const raw = await rawGet(origin, path);
      expect(raw.status, path).toBe(400);
      expect(raw.body).not.toContain('secret');
    }
    expect(fileOfPath(dir, '/../gh-web-secret.txt')).toBeUndefined();
    expect(fileOfPath(dir, '/%2e%2e%2fgh-web-secret.txt')).toBeUndefined();
    expect(fileOfPath(dir, '/a%00b')).toBeUndefined();
    expect(fileOfPath(dir, '/assets/app-1a2b.js')).toBe(join(dir, 'assets', 'app-1a2b.js'));
  });

  it('keeps the API at /graphql', async () => {
    const r = await post(controller.url, null, '{ __typename }');
    expect(r.status).toBe(200);
    expect(r.body.data).toEqual({ __typename: 'Query' });
  });
});
