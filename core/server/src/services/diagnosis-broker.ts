/**
 * Forward diagnosis through the host's agent (`diagnosePortForward`): the controller pushes a
 * request over the agent's `hostDiagnosisRequests` subscription and waits (at most
 * `DIAGNOSIS_TIMEOUT_MS`) for its `reportPortForwardDiagnosis`. The agent runs its driver's
 * troubleshooting matrix (the dataplane's diagnose.ts) on the host and answers with typed verdicts
 * and their evidence.
 *
 * An agent that does not hold the subscription — offline, or of a version before diagnosis — gets
 * no request: the caller is told which (CONFLICT: not connected; CAPABILITY_NOT_SUPPORTED: connected
 * but not diagnosing, with its version). Like tunnels, requests reach agents subscribed to this
 * replica only.
 */
import { randomBytes } from 'node:crypto';
import { MAX_DIAGNOSIS_FINDINGS, type DiagnosisRequest, type ReportPortForwardDiagnosisInput } from '@gatehouse/agent-protocol';
import { FORWARD_VERDICTS, type FindingSeverity, type ForwardVerdict } from '@gatehouse/sdk';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import type { Actor } from '../auth/actor.js';
import { formatIp } from '../net/ip.js';
import { CapabilityNotSupportedError, ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../support/errors.js';
import { validId, validIp } from '../support/validate.js';
import { HostAgentService } from './host-agent-service.js';
import { PortForwardService } from './port-forward-service.js';

/** How long an agent has to answer. */
export const DIAGNOSIS_TIMEOUT_MS = 30_000;
const SEVERITIES: readonly FindingSeverity[] = ['PASS', 'WARNING', 'FAULT'];
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** One finding of a diagnosis, as the API gives it. */
export interface PortForwardFinding {
  check: string;
  severity: FindingSeverity;
  verdict: ForwardVerdict;
  detail: string;
  rule: string | null;
  objectId: string | null;
  packets: number | null;
}

/** A forward's diagnosis, as the API gives it. */
export interface PortForwardDiagnosis {
  portForwardId: string;
  verdict: ForwardVerdict;
  findings: PortForwardFinding[];
  diagnosedAt: Date;
}

interface Pending {
  hostId: string;
  portForwardId: string;
  resolve: (d: PortForwardDiagnosis) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** A string of 1-`max` characters without control characters, else a ValidationError. */
function text(field: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || CONTROL.test(value))
    throw new ValidationError(field, String(value).slice(0, 100), `must be 1-${max} characters without control characters`);
  return value;
}

@injectable()
export class DiagnosisBroker {
  /** Per host, the agents' push functions, newest last. */
  private readonly agents = new Map<string, ((r: DiagnosisRequest) => Promise<unknown>)[]>();
  private readonly pending = new Map<string, Pending>();

  constructor(
    @inject(PortForwardService) private readonly forwards: PortForwardService,
    @inject(HostAgentService) private readonly hostAgents: HostAgentService,
  ) {}

  /** The diagnosis requests for a host, for its agent (the host's AGENT token only). */
  requests(actor: Actor, hostId: string): AsyncIterable<DiagnosisRequest> {
    if (actor.scope !== 'agent' || actor.hostId !== hostId)
      throw new ForbiddenError(`hostDiagnosisRequests of host ${hostId} is for that host's AGENT token`, 'hostId', hostId);
    return new Repeater<DiagnosisRequest>(async (push, stop) => {
      const list = this.agents.get(hostId) ?? [];
      list.push(push);
      this.agents.set(hostId, list);
      await stop;
      const rest = (this.agents.get(hostId) ?? []).filter((p) => p !== push);
      if (rest.length > 0) this.agents.set(hostId, rest);
      else this.agents.delete(hostId);
    });
  }

  /** Asks the forward's host agent for a diagnosis and waits for it. */
  async diagnose(actor: Actor, input: { portForwardId: string; sourceAddress?: string | null }, timeoutMs = DIAGNOSIS_TIMEOUT_MS): Promise<PortForwardDiagnosis> {
    const id = validId('input.portForwardId', input.portForwardId);
    const sourceAddress = input.sourceAddress == null ? null : formatIp(validIp('input.sourceAddress', input.sourceAddress));
    const forward = await this.forwards.get(actor, id);
    if (!forward) throw new NotFoundError('input.portForwardId', id, 'port forward');
    const push = this.agents.get(forward.hostId)?.at(-1);
    if (!push) {
      const [agent] = await this.hostAgents.statuses([forward.hostId]);
      if (agent?.online)
        throw new CapabilityNotSupportedError(
          'portForwards.diagnosis',
          `the agent of the forward's host (version ${agent.agentVersion ?? 'unknown'}) does not take diagnosis requests: upgrade it`,
          'input.portForwardId',
          id,
        );
      throw new ConflictError('input.portForwardId', id, "cannot be diagnosed: its host's agent is not connected");
    }
    const requestId = randomBytes(16).toString('hex');
    return new Promise<PortForwardDiagnosis>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new ConflictError('input.portForwardId', id, `cannot be diagnosed: its host's agent did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(requestId, { hostId: forward.hostId, portForwardId: id, resolve, reject, timer });
      push({ requestId, portForwardId: id, sourceAddress }).catch((err: unknown) => {
        clearTimeout(timer);
        this.pending.delete(requestId);
        reject(new ConflictError('input.portForwardId', id, `cannot be diagnosed: its host's agent could not be asked (${(err as Error).message})`));
      });
    });
  }

  /** An agent's answer: checked, and handed to the caller waiting for it. */
  report(actor: Actor, input: ReportPortForwardDiagnosisInput): boolean {
    const hostId = validId('input.hostId', input.hostId);
    if (actor.scope !== 'agent' || actor.hostId !== hostId)
      throw new ForbiddenError(`input.hostId "${hostId}": only that host's agent token may answer its diagnosis requests`, 'input.hostId', hostId);
    const pending = this.pending.get(input.requestId);
    if (!pending || pending.hostId !== hostId) throw new NotFoundError('input.requestId', String(input.requestId).slice(0, 64), 'diagnosis request');
    if (input.error != null) {
      const error = text('input.error', input.error, 2000);
      this.settle(input.requestId, pending);
      pending.reject(new CapabilityNotSupportedError('portForwards.diagnosis', `the agent of the forward's host could not diagnose it: ${error}`, 'input.portForwardId', pending.portForwardId));
      return true;
    }
    const verdict = input.verdict;
    if (!verdict || !FORWARD_VERDICTS.includes(verdict)) throw new ValidationError('input.verdict', String(verdict), `must be one of ${FORWARD_VERDICTS.join(', ')}`);
    const findings = input.findings ?? [];
    if (findings.length > MAX_DIAGNOSIS_FINDINGS) throw new ValidationError('input.findings', `${findings.length} findings`, `lists more than ${MAX_DIAGNOSIS_FINDINGS}`);
    const checked = findings.map((f, i): PortForwardFinding => {
      const at = `input.findings[${i}]`;
      if (!SEVERITIES.includes(f.severity)) throw new ValidationError(`${at}.severity`, String(f.severity), `must be one of ${SEVERITIES.join(', ')}`);
      if (!FORWARD_VERDICTS.includes(f.verdict)) throw new ValidationError(`${at}.verdict`, String(f.verdict), `must be one of ${FORWARD_VERDICTS.join(', ')}`);
      const packets = f.packets ?? null;
      if (packets !== null && (!Number.isSafeInteger(packets) || packets < 0)) throw new ValidationError(`${at}.packets`, String(packets), 'must be a non-negative integer');
      return {
        check: text(`${at}.check`, f.check, 64),
        severity: f.severity,
        verdict: f.verdict,
        detail: text(`${at}.detail`, f.detail, 2000),
        rule: f.rule == null ? null : text(`${at}.rule`, f.rule, 256),
        objectId: f.objectId == null ? null : text(`${at}.objectId`, f.objectId, 64),
        packets,
      };
    });
    this.settle(input.requestId, pending);
    pending.resolve({ portForwardId: pending.portForwardId, verdict, findings: checked, diagnosedAt: new Date() });
    return true;
  }

  /** Refuses the diagnoses waiting (the controller stops). */
  close(): void {
    for (const [id, p] of this.pending) {
      this.settle(id, p);
      p.reject(new ConflictError('input.portForwardId', p.portForwardId, 'cannot be diagnosed: the controller is stopping'));
    }
  }

  private settle(requestId: string, pending: Pending): void {
    clearTimeout(pending.timer);
    this.pending.delete(requestId);
  }
}
