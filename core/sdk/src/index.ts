/** @gatehouse/sdk: the only package a plugin author imports. */
export { CoalescingRunner } from './coalescing-runner.js';
export * from './desired-state.js';
export * from './driver.js';
export * from './diagnosis.js';
export * from './errors.js';
export { CommandError, run, type ExecTarget } from './exec.js';
export * from './observed.js';
export { checkForward, checkInstanceHeader, checkPatchShape, markValid, validateDesiredState } from './validate.js';
export * from './capability-check.js';
