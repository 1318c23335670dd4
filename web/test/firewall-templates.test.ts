/** The Firewall tab's templates: how a template is listed to apply, and what saving one keeps. */
import { describe, expect, it } from 'vitest';
import { templateContents, templateLabel } from '../src/pages/instance/firewall-tab.js';

describe('templateLabel', () => {
  it('shows a built-in template with what it allows', () => {
    expect(templateLabel({ name: 'Web server', description: 'SSH, HTTP and HTTPS in', builtIn: true })).toBe('Web server — SSH, HTTP and HTTPS in');
  });

  it('marks a saved template (no description) as saved, without a dangling dash', () => {
    expect(templateLabel({ name: 'web1 rules', description: '', builtIn: false })).toBe('web1 rules (saved)');
  });
});

describe('templateContents', () => {
  it('counts the rules saved with the policies', () => {
    expect(templateContents(3, 'DROP', 'ALLOW')).toBe(
      'The 3 rules above and the default policies (inbound DROP, outbound ALLOW), to apply to other instances.',
    );
    expect(templateContents(1, 'ALLOW', 'ALLOW')).toMatch(/^The rule above and/);
    expect(templateContents(0, 'ALLOW', 'REJECT')).toBe('No rules, only the default policies (inbound ALLOW, outbound REJECT), to apply to other instances.');
  });
});
