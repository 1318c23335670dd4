/** @gatehouse/sdk/testkit: what a plugin's tests need — the contract tier (no root), the network-namespace lab, real traffic helpers and the traffic conformance suite. */
export { NetnsLab, labAvailable, type LabNamespace } from './lab.js';
export {
  eventually,
  tcpConnectLoop,
  tcpConnectRate,
  tcpOutcome,
  tcpServer,
  udpOutcome,
  udpServer,
  type ConnectLoop,
  type ConnectRateResult,
  type LabServer,
  type Outcome,
} from './traffic.js';
export { driverConformance, type ConformanceHarness, type HarnessInstance, type HarnessNic } from './conformance.js';
export { CONTRACT_CHECKS, contractSuite, runContractTier, type ContractHarness, type ContractResult } from './contract.js';
