/**
 * Forward diagnosis: why connections to a port forward do not arrive, as a driver finds it on the
 * host (`NetworkDriver.diagnoseForward`). Every check gives a finding with its evidence (the
 * counter, the rule, the sysctl, the connect error); the diagnosis's verdict is the first fault
 * found, else the first warning, else OK.
 */

import type { DesiredState } from './desired-state.js';

/** What a finding says. */
export const FORWARD_VERDICTS = [
  'OK',
  /** The forward is not in the state the agent applied (not yet applied, or failed). */
  'NOT_APPLIED',
  /** The backend reports the target instance stopped, or its NICs are not on the host. */
  'INSTANCE_STOPPED',
  /** The host does not route between interfaces (net.ipv4.ip_forward / net.ipv6.conf.all.forwarding is 0). */
  'IP_FORWARDING_DISABLED',
  /** A base chain of another table (Docker's iptables FORWARD policy, fail2ban, CrowdSec) drops forwarded traffic. */
  'FOREIGN_RULE_DROP',
  /** The client's source address is not in the forward's allow-list, or the allow-list dropped packets. */
  'SOURCE_NOT_ALLOWED',
  /** The target instance's firewall refuses the forwarded connections (a rule or its inbound policy). */
  'FIREWALL_DROP',
  /** The target refuses connections: nothing listens on the target port. */
  'TARGET_NOT_LISTENING',
  /** The target does not answer from the host at all (no route, silently dropped). */
  'TARGET_UNREACHABLE',
  /** The forward's rate limits dropped or refused new connections. */
  'RATE_LIMITED',
  /** Forwarded connections got no reply through the host: the target answers by another route (asymmetric routing, no masquerade). */
  'REPLY_PATH_BROKEN',
] as const;

export type ForwardVerdict = (typeof FORWARD_VERDICTS)[number];

/** How bad a finding is: a FAULT stops connections; a WARNING explains some of them failing; PASS is a check that found nothing. */
export type FindingSeverity = 'PASS' | 'WARNING' | 'FAULT';

/** One check's result. */
export interface ForwardFinding {
  /** Which check: `forward`, `instance`, `ipForwarding`, `foreignRules`, `sourceAllowList`, `firewall`, `target`, `rateLimit`, `replyPath`. */
  check: string;
  severity: FindingSeverity;
  /** OK for a PASS; what it found otherwise. */
  verdict: ForwardVerdict;
  /** One line for a person, naming what was seen. */
  detail: string;
  /** The nft rule or object concerned (`inet gatehouse fw_in_… #2`, `ip filter FORWARD`), when there is one. */
  rule?: string | null;
  /** The Gatehouse object concerned (a firewall rule id), when there is one. */
  objectId?: string | null;
  /** Packets the rule counted, when it has a counter. */
  packets?: number | null;
}

/** What `diagnoseForward` answers. */
export interface ForwardDiagnosis {
  forwardId: string;
  verdict: ForwardVerdict;
  findings: ForwardFinding[];
}

/** What `diagnoseForward` is asked. */
export interface DiagnoseForwardInput {
  /** The state the agent applied last. */
  desired: DesiredState;
  forwardId: string;
  /** A client address to diagnose for (the allow-list and firewall rules with a source); absent: any. */
  sourceAddress?: string | null;
}

const SEVERITY_RANK: Record<FindingSeverity, number> = { FAULT: 2, WARNING: 1, PASS: 0 };

/** The verdict of a list of findings: the first fault, else the first warning, else OK. */
export function overallVerdict(findings: readonly ForwardFinding[]): ForwardVerdict {
  let best: ForwardFinding | undefined;
  for (const f of findings) if (SEVERITY_RANK[f.severity] > SEVERITY_RANK[best?.severity ?? 'PASS']) best = f;
  return best?.verdict ?? 'OK';
}
