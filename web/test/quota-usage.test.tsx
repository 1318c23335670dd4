/** The quota usage of the Bandwidth and Monitoring tabs: the bar's share and tone, the state, and the throttle when in force. */
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import { QuotaUsage } from '../src/traffic/quota-usage.js';

const text = (html: string) => html.replace(/<[^>]+>/g, '');

describe('QuotaUsage', () => {
  it('says when there is no quota, with what was used', () => {
    const html = renderToStaticMarkup(<QuotaUsage period={{ totalBytes: 1.5e9, quotaBytes: null, quotaState: null, throttled: false }} />);
    expect(text(html)).toBe('No monthly quota: 1.50 GB used this period.');
    expect(html).not.toContain('role="meter"');
  });

  it('shows the share used as a meter, warning-toned at 80 %', () => {
    const html = renderToStaticMarkup(<QuotaUsage period={{ totalBytes: 8.5e9, quotaBytes: 1e10, quotaState: 'WARNING', throttled: false }} />);
    expect(html).toContain('class="meter meter-warning"');
    expect(html).toContain('aria-valuenow="8500000000"');
    expect(html).toContain('width:85%');
    expect(text(html)).toContain('8.50 GB of 10 GB · 80 % of the quota used');
    expect(html).not.toContain('Throttled');
  });

  it('caps the bar at full when exceeded and says the throttle is in force, at its rate', () => {
    const html = renderToStaticMarkup(
      <QuotaUsage period={{ totalBytes: 1.2e10, quotaBytes: 1e10, quotaState: 'EXCEEDED', throttled: true }} throttleMbps={2} />,
    );
    expect(html).toContain('class="meter meter-exceeded"');
    expect(html).toContain('aria-valuenow="10000000000"');
    expect(html).toContain('width:100%');
    expect(html).toContain('data-throttled="true"');
    expect(text(html)).toContain('12 GB of 10 GB · quota exceeded');
    expect(text(html)).toContain('Throttled to 2 Mbit/s until the period ends');
  });

  it('does not claim a throttle for an exceeded NOTIFY quota', () => {
    const html = renderToStaticMarkup(<QuotaUsage period={{ totalBytes: 1.2e10, quotaBytes: 1e10, quotaState: 'EXCEEDED', throttled: false }} />);
    expect(text(html)).not.toContain('Throttled');
  });
});
