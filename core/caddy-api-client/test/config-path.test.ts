/** Config paths: what URL each form becomes, and the paths refused because Caddy would misread them. */
import { describe, expect, it } from 'vitest';
import { CaddyInvalidPathError, checkObjectId, configPathSegments, encodeConfigPath } from '../src/index.js';

describe('config paths', () => {
  it('encodes arrays and strings to the same URL path, percent-encoding each segment', () => {
    expect(encodeConfigPath(['apps', 'http', 'servers', 'srv 0', 'routes', 3])).toBe('apps/http/servers/srv%200/routes/3');
    expect(encodeConfigPath('/apps/http/servers/srv 0/routes/3/')).toBe('apps/http/servers/srv%200/routes/3');
    expect(encodeConfigPath(['a?b#c%d', 'ü', '@id'])).toBe('a%3Fb%23c%25d/%C3%BC/%40id');
    expect(encodeConfigPath([])).toBe('');
    expect(encodeConfigPath('/')).toBe('');
    expect(encodeConfigPath(['apps', 'http', 'servers', 'web', 'routes', '...'])).toBe('apps/http/servers/web/routes/...');
    expect(configPathSegments('apps//http'.replace('//', '/'))).toEqual(['apps', 'http']);
  });

  it.each([
    [['apps', 'a/b'], "contains '/'"],
    [['apps', ''], 'empty segment'],
    ['apps//http', 'empty segment'],
    [['apps', '..'], 'resolved by the HTTP router'],
    ['apps/./http', 'resolved by the HTTP router'],
    [['routes', -1], 'not a non-negative integer'],
    [['routes', 1.5], 'not a non-negative integer'],
    [['routes', '...', 'x'], "'...' may only be the last segment"],
  ])('refuses %j (%s)', (path, reason) => {
    expect(() => encodeConfigPath(path as never)).toThrow(CaddyInvalidPathError);
    expect(() => encodeConfigPath(path as never)).toThrow(reason);
  });

  it('refuses @ids that /id/ cannot address', () => {
    expect(checkObjectId('proxy:42 ü')).toBe('proxy:42 ü');
    for (const id of ['', 'a/b', '.', '..']) expect(() => checkObjectId(id)).toThrow(CaddyInvalidPathError);
  });
});
