/**
 * The DI token of the reverse proxy manager. It lives beside the manager rather than in
 * di/tokens.ts, which sits below the services and so cannot name a class built on them.
 */
import type { InjectionToken } from 'tsyringe';
import type { ProxyManager } from './proxy-manager.js';

/** The reverse proxy manager, registered only when this controller drives a Caddy. */
export const ProxyManagerToken: InjectionToken<ProxyManager> = Symbol('ProxyManager');
