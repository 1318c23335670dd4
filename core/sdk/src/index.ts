/** @gatehouse/sdk: the only package a plugin author imports. */
export * from './desired-state.js';
export { CommandError, run, type ExecTarget } from './exec.js';
