import { describe, expect, it } from 'vitest';
import { rateLimitText } from '../src/text.js';

describe('rateLimitText', () => {
  it('says none for a forward without limits or refusals', () => {
    expect(rateLimitText(null, null)).toBe('none');
    expect(rateLimitText(null, { connections: 0 })).toBe('none');
  });

  it('names each limit with its burst and action, and the refused connections', () => {
    expect(rateLimitText({ perSource: 50, total: null, burst: 5, action: 'DROP' }, { connections: 1796 })).toBe(
      '50/s per source (burst 5, drop) · 1,796 refused',
    );
    expect(rateLimitText({ perSource: 50, total: 200, burst: 10, action: 'REJECT' }, null)).toBe('50/s per source, 200/s in all (burst 10, reject)');
    expect(rateLimitText({ perSource: null, total: 30, burst: 5, action: 'REJECT' }, { connections: 936 })).toBe('30/s in all (burst 5, reject) · 936 refused');
  });

  it('keeps showing what a removed limit refused', () => {
    expect(rateLimitText(null, { connections: 64 })).toBe('none · 64 refused');
  });
});
