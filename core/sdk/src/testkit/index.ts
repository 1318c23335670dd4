/** @gatehouse/sdk/testkit: what a plugin's tests need — the network-namespace lab (the driver conformance suite follows). */
export { NetnsLab, labAvailable, type LabNamespace } from './lab.js';
