/** IP parsing and formatting, checked on known cases and on generated values. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalIp, formatIp, netmaskToPrefixLength, parseCidr, parseIp } from '../src/net/ip.js';

describe('parseIp / formatIp', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1::', '1::'],
  ])('%s → %s', (input, canonical) => {
    expect(canonicalIp(input)).toBe(canonical);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '01.2.3.4',
    '1.2.3.-4',
    ' 1.2.3.4',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '12345::',
    'fe80::1%eth0',
    'g::1',
    '::1.2.3',
    ':1::',
    '1:2:3:4:5:6:7::8',
  ])('refuses %j', (input) => {
    expect(canonicalIp(input)).toBeUndefined();
  });

  it('round-trips every IPv4 address it formats', () => {
    fc.assert(
      fc.property(fc.ipV4(), (text) => {
        const parsed = parseIp(text);
        expect('error' in parsed).toBe(false);
        expect(formatIp(parsed as never)).toBe(text);
      }),
    );
  });

  it('parses every IPv6 spelling fast-check generates to the value of its canonical form', () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        const parsed = parseIp(text);
        expect('error' in parsed).toBe(false);
        const canonical = formatIp(parsed as never);
        expect(parseIp(canonical)).toEqual(parsed);
        expect(canonical).toBe(canonical.toLowerCase());
        expect(canonical).not.toMatch(/(^|:)0[0-9a-f]/);
      }),
    );
  });

  it('never throws on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (text) => {
        const parsed = parseIp(text);
        if (!('error' in parsed)) expect(parseIp(formatIp(parsed))).toEqual(parsed);
      }),
    );
  });
});

describe('parseCidr and netmasks', () => {
  it('refuses host bits and names the network', () => {
    expect(parseCidr('10.0.0.1/24')).toEqual({ error: 'has host bits set (the network is 10.0.0.0/24)' });
    expect(parseCidr('10.0.0.0/24')).toEqual({ family: 4, network: 0x0a000000n, prefixLength: 24 });
    expect(parseCidr('2001:db8::/129')).toMatchObject({ error: expect.stringContaining('over 128') });
  });

  it('converts contiguous netmasks only', () => {
    expect(netmaskToPrefixLength('255.255.255.0')).toBe(24);
    expect(netmaskToPrefixLength('255.255.255.255')).toBe(32);
    expect(netmaskToPrefixLength('0.0.0.0')).toBe(0);
    expect(netmaskToPrefixLength('255.0.255.0')).toEqual({ error: 'is not a contiguous netmask' });
  });
});
