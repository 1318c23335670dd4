/** Forward diagnosis: `diagnosePortForward`, and the agent's side (`hostDiagnosisRequests`, `reportPortForwardDiagnosis`). */
import type { DiagnosisRequest, ReportPortForwardDiagnosisInput as ReportDiagnosisWire } from '@gatehouse/agent-protocol';
import { FORWARD_VERDICTS } from '@gatehouse/sdk';
import type { PortForwardDiagnosis, PortForwardFinding } from '../../services/diagnosis-broker.js';
import { CapabilityNotSupportedError, ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { resultOf } from './mutation-result.js';

const VERDICT_DESCRIPTIONS: Record<(typeof FORWARD_VERDICTS)[number], string> = {
  OK: 'Nothing found in the way.',
  NOT_APPLIED: 'The forward is not in effect on the host (not applied yet, failed, or its table was removed).',
  INSTANCE_STOPPED: 'The target instance is stopped, or its NICs are not on the host.',
  IP_FORWARDING_DISABLED: 'The host does not route between interfaces (net.ipv4.ip_forward / net.ipv6.conf.all.forwarding is 0).',
  FOREIGN_RULE_DROP: "Another table's chain drops forwarded traffic: Docker's iptables FORWARD policy DROP, fail2ban or CrowdSec rules.",
  SOURCE_NOT_ALLOWED: "The client's address is not in the forward's source allow-list (or the allow-list dropped packets).",
  FIREWALL_DROP: "The target instance's inbound firewall refuses the port: a rule (named, with its counter) or its policy.",
  TARGET_NOT_LISTENING: 'The target refuses connections: nothing listens on the target port.',
  TARGET_UNREACHABLE: 'The target does not answer the host at all.',
  RATE_LIMITED: "The forward's rate limits dropped or refused new connections (counted).",
  REPLY_PATH_BROKEN: "Forwarded connections got no reply through the host: the target answers by another route (asymmetric routing, no masquerade).",
};

const ForwardVerdictEnum = builder.enumType('PortForwardVerdict', {
  description: 'What a forward diagnosis found (the troubleshooting matrix of the operations guide).',
  values: Object.fromEntries(FORWARD_VERDICTS.map((v) => [v, { value: v, description: VERDICT_DESCRIPTIONS[v] }])) as Record<
    (typeof FORWARD_VERDICTS)[number],
    { value: (typeof FORWARD_VERDICTS)[number]; description: string }
  >,
});

const FindingSeverityEnum = builder.enumType('PortForwardFindingSeverity', {
  description: 'How bad a finding is.',
  values: {
    PASS: { value: 'PASS', description: 'The check found nothing in the way.' },
    WARNING: { value: 'WARNING', description: 'It explains some connections failing (a counter that grew, a rule refusing some sources).' },
    FAULT: { value: 'FAULT', description: 'It stops connections.' },
  } as const,
});

const FindingRef = builder.objectRef<PortForwardFinding>('PortForwardFinding').implement({
  description: 'One check of a forward diagnosis, with its evidence.',
  fields: (t) => ({
    check: t.exposeString('check', {
      description: 'Which check: instance, forward, ipForwarding, foreignRules, sourceAllowList, firewall, target, rateLimit, replyPath.',
    }),
    severity: t.field({ type: FindingSeverityEnum, description: 'PASS, WARNING or FAULT.', resolve: (f) => f.severity }),
    verdict: t.field({ type: ForwardVerdictEnum, description: 'OK for a PASS; what was found otherwise.', resolve: (f) => f.verdict }),
    detail: t.exposeString('detail', { description: 'What was seen, for a person: the sysctl, the rule, the counter, the connect error.' }),
    rule: t.exposeString('rule', { nullable: true, description: 'The nft rule or chain concerned, e.g. "ip filter FORWARD" or "inet gatehouse fw_in_… #1".' }),
    objectId: t.exposeString('objectId', { nullable: true, description: 'The Gatehouse object concerned (a firewall rule, the instance, the forward).' }),
    packets: t.float({ nullable: true, description: "Packets the rule's counter counted (since it was made), when it has one.", resolve: (f) => f.packets }),
  }),
});

const DiagnosisRef = builder.objectRef<PortForwardDiagnosis>('PortForwardDiagnosis').implement({
  description: "Why connections to a forward may fail, as its host's agent found it on the host.",
  fields: (t) => ({
    portForwardId: t.exposeID('portForwardId', { description: 'The forward diagnosed.' }),
    verdict: t.field({ type: ForwardVerdictEnum, description: 'The first FAULT found, else the first WARNING, else OK.', resolve: (d) => d.verdict }),
    findings: t.field({ type: [FindingRef], description: 'Every check, in the order run.', resolve: (d) => d.findings }),
    diagnosedAt: t.expose('diagnosedAt', { type: 'DateTime', description: 'When the answer arrived.' }),
  }),
});

const DiagnosePortForwardInput = builder.inputType('DiagnosePortForwardInput', {
  description: 'The forward to diagnose.',
  fields: (t) => ({
    portForwardId: t.id({ required: true, description: 'One of your forwards (any, for an admin).' }),
    sourceAddress: t.string({ description: 'A client address to diagnose for (the allow-list and firewall rules with a source). Absent: any client.' }),
  }),
});

builder.mutationField('diagnosePortForward', (t) =>
  t.field({
    type: DiagnosisRef,
    description:
      "Runs the troubleshooting matrix for a forward on its host's agent and answers with typed verdicts and evidence (changes nothing; takes a few seconds). CONFLICT when the agent is not connected or does not answer in 30 s; CAPABILITY_NOT_SUPPORTED when its agent or driver cannot diagnose.",
    args: { input: t.arg({ type: DiagnosePortForwardInput, required: true, description: 'The forward.' }) },
    errors: resultOf('DiagnosePortForward', 'diagnosis', [ValidationError, NotFoundError, ConflictError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.diagnoses.diagnose(requireActor(ctx), { portForwardId: String(input.portForwardId), sourceAddress: input.sourceAddress }),
  }),
);

const DiagnosisRequestRef = builder.objectRef<DiagnosisRequest>('DiagnosisRequest').implement({
  description: "A forward diagnosis the controller asks a host's agent for; answered with reportPortForwardDiagnosis.",
  fields: (t) => ({
    requestId: t.exposeString('requestId', { description: 'Names the answer; good once.' }),
    portForwardId: t.exposeID('portForwardId', { description: 'The forward, one of the host applied state.' }),
    sourceAddress: t.exposeString('sourceAddress', { nullable: true, description: 'A client address to diagnose for; null: any.' }),
  }),
});

builder.subscriptionField('hostDiagnosisRequests', (t) =>
  t.field({
    type: DiagnosisRequestRef,
    description: "For host agents (the host's AGENT token): the forward diagnoses the controller wants. Agents without it are told apart as not diagnosing.",
    args: { hostId: t.arg.id({ required: true, description: "The agent's own host (its token's)." }) },
    subscribe: (_r, args, ctx) => ctx.services.diagnoses.requests(requireActor(ctx, { allowAgent: true }), String(args.hostId)),
    resolve: (request) => request,
  }),
);

const WireFindingInput = builder.inputType('PortForwardFindingInput', {
  description: 'One check of a diagnosis, as the agent found it.',
  fields: (t) => ({
    check: t.string({ required: true, description: 'Which check, 1-64 characters.' }),
    severity: t.field({ type: FindingSeverityEnum, required: true, description: 'PASS, WARNING or FAULT.' }),
    verdict: t.field({ type: ForwardVerdictEnum, required: true, description: 'OK for a PASS.' }),
    detail: t.string({ required: true, description: 'What was seen, 1-2000 characters.' }),
    rule: t.string({ description: 'The nft rule or chain concerned, at most 256 characters.' }),
    objectId: t.string({ description: 'The Gatehouse object concerned.' }),
    packets: t.float({ description: "The rule's counter (packets), a non-negative integer." }),
  }),
});

const ReportDiagnosisInput = builder.inputType('ReportPortForwardDiagnosisInput', {
  description: "An agent's answer to a DiagnosisRequest: the diagnosis, or why there is none.",
  fields: (t) => ({
    hostId: t.id({ required: true, description: "The agent's host." }),
    requestId: t.string({ required: true, description: "The request's requestId." }),
    verdict: t.field({ type: ForwardVerdictEnum, description: 'The overall verdict; absent with error.' }),
    findings: t.field({ type: [WireFindingInput], description: 'Every check, at most 100.' }),
    error: t.string({ description: 'Why no diagnosis was made (e.g. the driver cannot diagnose), one line.' }),
  }),
});

const DiagnosisAnsweredRef = builder.objectRef<{ accepted: boolean }>('PortForwardDiagnosisAnswer').implement({
  description: 'The controller took the answer.',
  fields: (t) => ({ accepted: t.exposeBoolean('accepted', { description: 'Always true: a refused answer is an error result.' }) }),
});

builder.mutationField('reportPortForwardDiagnosis', (t) =>
  t.field({
    type: DiagnosisAnsweredRef,
    description: "For host agents: the answer to a DiagnosisRequest (the host's AGENT token).",
    args: { input: t.arg({ type: ReportDiagnosisInput, required: true, description: 'The answer.' }) },
    errors: resultOf('ReportPortForwardDiagnosis', 'answer', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ({ accepted: ctx.services.diagnoses.report(requireActor(ctx, { allowAgent: true }), input as unknown as ReportDiagnosisWire) }),
  }),
);
