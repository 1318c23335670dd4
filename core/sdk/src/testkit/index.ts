/** @gatehouse/sdk/testkit: what a plugin's tests need — the network-namespace lab, real traffic helpers and the driver conformance suite. */
export { NetnsLab, labAvailable, type LabNamespace } from './lab.js';
export { eventually, tcpOutcome, tcpServer, udpOutcome, udpServer, type LabServer, type Outcome } from './traffic.js';
export { driverConformance, type ConformanceHarness, type HarnessInstance, type HarnessNic } from './conformance.js';
