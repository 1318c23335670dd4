/**
 * The apply status every host-applied object shows (forwards, firewall rules, limits, NICs, proxies).
 * Its own file: the domain files that show it would otherwise import one another.
 */
import { builder } from '../builder.js';

/** PENDING / APPLIED / FAILED / DRIFTED, as the host's agent (or Caddy) last reported. */
export const ApplyStatusEnum = builder.enumType('ApplyStatus', {
  description: 'PENDING: not yet applied (or the agent is away). APPLIED. FAILED: see statusError. DRIFTED: the host no longer matches.',
  values: { PENDING: { value: 'pending' }, APPLIED: { value: 'applied' }, FAILED: { value: 'failed' }, DRIFTED: { value: 'drifted' } } as const,
});
