/** Domain parsing for the reverse proxy, on known cases and generated strings. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { domainCoveredBy, parseDomain } from '../src/net/domain.js';

describe('parseDomain', () => {
  it.each([
    ['Shop.Example.COM', 'shop.example.com'],
    ['shop.example.com.', 'shop.example.com'],
    ['*.user1.example.com', '*.user1.example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
  ])('%s → %s', (input, name) => {
    expect(parseDomain(input)).toMatchObject({ name });
  });

  it.each([
    ['', 'empty'],
    ['shop example.com', 'spaces'],
    ['shop.example.com\u0007', 'control'],
    ['a.*.example.com', 'wildcard'],
    ['*example.com', 'wildcard'],
    ['example', 'two labels'],
    [`${'a'.repeat(64)}.example.com`, 'invalid label'],
    ['-shop.example.com', 'invalid label'],
    ['shop_1.example.com', 'contains "_"'],
    ['b.example.net?x=1', 'contains "?"'],
    ['c.example.net#frag', 'contains "#"'],
    ['a.example.net/x', 'contains "/"'],
    ['i.example.net/../../etc', 'contains "/"'],
    ['user@a.example.net', 'contains "@"'],
    ['a.example.net:8080', 'contains ":"'],
    ['a.example.net\uff0fx', 'not a valid domain name'],
    ['10.0.0.1', 'numeric'],
    [`${'abcdefghi.'.repeat(26)}com`, '253'],
  ])('refuses %j (%s)', (input, reason) => {
    const r = parseDomain(input);
    expect('error' in r && r.error).toContain(reason);
  });

  it('never throws, and what it accepts it accepts again unchanged', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.domain(),
          fc.string({ maxLength: 40 }),
          fc.domain().map((d) => `*.${d.toUpperCase()}.`),
        ),
        (text) => {
          const r = parseDomain(text);
          if (!('error' in r)) expect(parseDomain(r.name)).toEqual(r);
        },
      ),
    );
  });

  it('matches a wildcard template to exactly one label', () => {
    expect(domainCoveredBy('vm1.user1.example.com', '*.user1.example.com')).toBe(true);
    expect(domainCoveredBy('a.vm1.user1.example.com', '*.user1.example.com')).toBe(false);
    expect(domainCoveredBy('user1.example.com', '*.user1.example.com')).toBe(false);
    expect(domainCoveredBy('*.user1.example.com', '*.user1.example.com')).toBe(true);
  });
});
