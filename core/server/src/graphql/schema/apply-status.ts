/**
 * The apply status every host-applied object shows (forwards, firewall rules, limits, NICs, proxies).
 * Its own file: the domain files that show it would otherwise import one another.
 */
import { builder } from '../builder.js';

/** PENDING / APPLIED / FAILED / DRIFTED, as the host's agent (or Caddy) last reported. */
export const ApplyStatusEnum = builder.enumType('ApplyStatus', {
  description: "Whether an object is in effect on its host, as the host's agent (for web proxies: Caddy) last reported.",
  values: {
    PENDING: { value: 'pending', description: "Not applied yet: the change is on its way, or the host's agent is offline (it applies on return)." },
    APPLIED: { value: 'applied', description: 'In effect on the host.' },
    FAILED: { value: 'failed', description: 'The host could not apply it; statusError says why.' },
    DRIFTED: { value: 'drifted', description: "The host no longer matches it (someone changed the host's rules); the agent repairs it." },
  } as const,
});
