/**
 * Forward diagnosis between a controller and a host agent: the controller pushes a
 * `DiagnosisRequest` over the agent's `hostDiagnosisRequests` subscription; the agent runs its
 * driver's `diagnoseForward` against the state it applied and answers with
 * `reportPortForwardDiagnosis` (the diagnosis, or why it could not make one).
 */
import type { ForwardFinding, ForwardVerdict } from '@gatehouse/sdk';

/** One diagnosis the controller wants. */
export interface DiagnosisRequest {
  /** Names the answer; one-time. */
  requestId: string;
  portForwardId: string;
  /** A client address to diagnose for; null: any. */
  sourceAddress: string | null;
}

/** A finding as it travels: the SDK's `ForwardFinding` (its enums are the GraphQL ones). */
export type WireForwardFinding = ForwardFinding;

/** Variables of `reportPortForwardDiagnosis` (`input`). */
export interface ReportPortForwardDiagnosisInput {
  hostId: string;
  requestId: string;
  /** The overall verdict; absent with `error`. */
  verdict?: ForwardVerdict | null;
  findings?: WireForwardFinding[] | null;
  /** Why no diagnosis was made (the driver cannot diagnose, the forward is unknown here); one line. */
  error?: string | null;
}

/** Most findings one answer may carry. */
export const MAX_DIAGNOSIS_FINDINGS = 100;
