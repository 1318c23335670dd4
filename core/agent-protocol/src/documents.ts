/**
 * The GraphQL documents a host agent sends to its controller. The controller's tests validate
 * each against the printed `schema.graphql`, so a schema change that breaks an agent fails there.
 */

/** The host an AGENT token acts for (an agent started without --host). */
export const AGENT_HOST_QUERY = `query AgentHost { agentHost { id } }`;

/** The full desired state, then a patch (`DesiredStatePatch`) per revision. Variables: `{ hostId }`. */
export const DESIRED_STATE_SUBSCRIPTION = `subscription DesiredState($hostId: ID!) { hostDesiredStateChanges(hostId: $hostId) { hostId revision apiVersion full patch } }`;

/** Per-object apply status. Variables: `{ input: ReportObjectStatusInput }`. */
export const REPORT_OBJECT_STATUS_MUTATION = `mutation ReportObjectStatus($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename ... on Error { message } } }`;

/** The host's status: applied revision, error, driver, discovered instances, drift. Variables: `{ input: ReportHostStatusInput }`. */
export const REPORT_HOST_STATUS_MUTATION = `mutation ReportHostStatus($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ... on Error { message } } }`;

/**
 * The tunnel streams the controller asks the host's agent for (`TunnelRequest`s). Variables:
 * `{ hostId, ports }`, `ports` being the target ports this agent allows (the controller asks for
 * no other).
 */
export const TUNNEL_REQUESTS_SUBSCRIPTION = `subscription TunnelRequests($hostId: ID!, $ports: [Int!]!) { hostTunnelRequests(hostId: $hostId, ports: $ports) { ticket address port } }`;

/** Raw traffic counters, once per interval. Variables: `{ input: ReportTrafficInput }`. */
export const REPORT_TRAFFIC_MUTATION = `mutation ReportTraffic($input: ReportTrafficInput!) { reportTraffic(input: $input) { __typename ... on ReportTrafficPayload { outcome { counted rejected { field message } } } ... on Error { message } } }`;

/**
 * The forward diagnoses the controller asks the host's agent for (`DiagnosisRequest`s). Variables:
 * `{ hostId }`. An agent holding this subscription answers each with `REPORT_DIAGNOSIS_MUTATION`;
 * the controller tells a caller whose host's agent does not hold it that the agent cannot diagnose.
 */
export const DIAGNOSIS_REQUESTS_SUBSCRIPTION = `subscription DiagnosisRequests($hostId: ID!) { hostDiagnosisRequests(hostId: $hostId) { requestId portForwardId sourceAddress } }`;

/** The answer to one diagnosis request. Variables: `{ input: ReportPortForwardDiagnosisInput }`. */
export const REPORT_DIAGNOSIS_MUTATION = `mutation ReportPortForwardDiagnosis($input: ReportPortForwardDiagnosisInput!) { reportPortForwardDiagnosis(input: $input) { __typename ... on Error { message } } }`;

/** Every document of the protocol, by name (what the controller's tests validate). */
export const AGENT_DOCUMENTS = {
  AGENT_HOST_QUERY,
  DESIRED_STATE_SUBSCRIPTION,
  REPORT_OBJECT_STATUS_MUTATION,
  REPORT_HOST_STATUS_MUTATION,
  TUNNEL_REQUESTS_SUBSCRIPTION,
  REPORT_TRAFFIC_MUTATION,
  DIAGNOSIS_REQUESTS_SUBSCRIPTION,
  REPORT_DIAGNOSIS_MUTATION,
} as const;
