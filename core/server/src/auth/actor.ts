/** Who is making a request: resolved once from the bearer token, then passed to every service call. */
export interface Actor {
  readonly userId: string;
  readonly userName: string;
  readonly role: 'admin' | 'user';
  readonly tokenId: string;
  readonly scope: 'admin' | 'user' | 'agent';
  /** For agent tokens: the host the token may act for. */
  readonly hostId: string | null;
  /** Correlates the audit entries of one request. */
  readonly requestId: string;
}

/** Whether the actor acts with admin rights (an admin user holding an admin-scoped token). */
export function isAdmin(actor: Actor): boolean {
  return actor.scope === 'admin' && actor.role === 'admin';
}

/** An actor for work the controller does on its own (first start, maintenance). */
export function systemActor(requestId: string): Actor {
  return {
    userId: '00000000-0000-0000-0000-000000000000',
    userName: 'system',
    role: 'admin',
    tokenId: '00000000-0000-0000-0000-000000000000',
    scope: 'admin',
    hostId: null,
    requestId,
  };
}
