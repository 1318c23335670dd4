/**
 * The host agent: keeps one host equal to its desired state.
 *
 * - Receives the full desired state when it (re)connects, then every new revision; applies them
 *   one at a time, always the newest (revisions that arrive during an apply are coalesced).
 * - The first apply after start and after each reconnect is a repair (rebuild from scratch), so a
 *   host that changed while the agent was away converges.
 * - Reports what happened: per-object status (`reportObjectStatus`) and the host's applied
 *   revision, last error, discovered instances and drift (`reportHostStatus`).
 * - Polls for drift (the driver's cheap check every `driftIntervalMs`, a thorough one every
 *   `thoroughEvery` polls) and repairs it: an admin's `nft flush ruleset` is undone within
 *   seconds. Checks take at most a fifth of the time (after each, a rest of four times its
 *   duration), and a revision arriving stops the check under way.
 * - A malformed document is refused (nothing applied, the error reported). A failed apply, or
 *   one where objects failed (`nft` missing, an instance not on the host yet), is tried again
 *   with backoff (0.5 s doubling to 30 s; a new revision starts over) when the error is
 *   retryable; otherwise (a conflict, a bad configuration) it waits for a new revision.
 * - Objects the driver's capabilities do not cover are not handed to it: they are reported
 *   FAILED with CAPABILITY_NOT_SUPPORTED. The driver's id, version and capabilities go with
 *   every host report.
 * - Calls `release` for each instance that left the desired state once the document without it
 *   is applied, and `gc` with the document's instance ids after the first apply and every
 *   `gcIntervalMs`.
 * - With a `stateDir`, stores every applied document there (state-cache.ts) and, on start,
 *   applies the stored one at once, before connecting: a host that reboots while the controller
 *   is down gets its forwards, firewalls and limits back (`startedFrom: CACHE`). Losing the
 *   controller never removes anything: the agent keeps the applied state and repairs drift
 *   against it until the controller answers again.
 * - Cut off from the controller (a network partition), it notices within one keep-alive (15 s,
 *   controller.ts), keeps repairing drift, and its reports wait in the connection; when the cut
 *   heals it reconnects by itself (to any of the controller URLs given), the reports of the cut
 *   are delivered, the first apply reports a fresh discovery, and whatever the controller changed
 *   meanwhile arrives as one full document applied at once, however many revisions it spans.
 */
import { EventEmitter } from 'node:events';
import {
  AGENT_HOST_QUERY,
  REPORT_HOST_STATUS_MUTATION,
  REPORT_DIAGNOSIS_MUTATION,
  REPORT_OBJECT_STATUS_MUTATION,
  MAX_DIAGNOSIS_FINDINGS,
  STATUS_OBJECT_TYPES,
  applyDesiredStatePatch,
  type AgentStartSource,
  type DesiredStateEvent,
  type DiagnosisRequest,
  type ListeningSocketInput,
  type ReportHostStatusInput,
  type ReportPortForwardDiagnosisInput,
  type WireObjectStatus,
} from '@gatehouse/agent-protocol';
import {
  CoalescingRunner,
  DriverConfigError,
  diffObservation,
  expectedObservation,
  isRetryable,
  markValid,
  toDriverError,
  unsupportedObjects,
  validateDesiredState,
  withoutObjects,
  type ApplyResult,
  type DesiredState,
  type DriverContext,
  type NetworkDriver,
  type ObjectResult,
} from '@gatehouse/sdk';
import { ControllerConnection, type AgentLogger, type TokenRefusedError } from './controller.js';
import { serveTunnels, type TunnelOptions } from './tunnel.js';
import { StateCache, StateCacheRefusedError } from './state-cache.js';
import { TrafficReporter } from './traffic-reporter.js';
import { readListeningSockets, type ListeningSocketOptions } from './listening-sockets.js';

export interface HostAgentOptions {
  /** The controller's URL, or the URLs of its replicas (tried in turn when a connection is lost). */
  controllerUrl: string | readonly string[];
  token: string;
  /** The host this agent manages; looked up from the token when absent. */
  hostId?: string;
  driver: NetworkDriver;
  logger?: AgentLogger;
  version?: string;
  /** Cheap drift check interval (default 2,000 ms). */
  driftIntervalMs?: number;
  /** Every how many drift polls the check is thorough (map elements too; default 15). */
  thoroughEvery?: number;
  /** How often discovered instances are reported again (default 60,000 ms). */
  discoverIntervalMs?: number;
  /** Reconnect backoff bounds. */
  backoff?: { minMs: number; maxMs: number };
  /** How often the driver's `gc` runs with the current document's instance ids (default 600,000 ms; also once after the first apply). */
  gcIntervalMs?: number;
  /** Tunnel streams to this host's instances (SSH through the controller): allowed ports (default 22), limits. */
  tunnel?: Pick<TunnelOptions, 'ports' | 'maxStreams' | 'idleMs'>;
  /** Where the last applied desired state is kept (state-cache.ts); absent: no cache (the agent waits for the controller at start). */
  stateDir?: string;
  /** How often traffic counters are read and reported (default 1,000 ms; 0: never). */
  statsIntervalMs?: number;
  /** The port audit: the host's listening sockets are reported with each discovery (default on; false: never). */
  portAudit?: false | ListeningSocketOptions;
}

/** Where the agent's first desired state came from in this run: its cache (applied before connecting) or the controller. */
export type StartedFrom = AgentStartSource;

/** What the agent knows about itself; also emitted as events. */
export interface HostAgentState {
  connected: boolean;
  hostId: string | null;
  appliedRevision: number | null;
  lastError: string | null;
  repairs: number;
  /** CACHE once the cached state was applied at start; CONTROLLER without a usable cache. */
  startedFrom: StartedFrom;
  /** The revision applied from the cache at start; null when started from the controller. */
  cachedRevision: number | null;
}

interface Job {
  revision: number;
  desired: DesiredState;
  repair: boolean;
  drift: string[];
  /** Objects the documents since the last apply added or changed ('all' after a full document). */
  changed: Set<string> | 'all';
}

/** After a drift check, the agent waits this many times its duration before the next (checks take at most a fifth of the time). */
const DRIFT_REST_FACTOR = 4;
/** How long after a patched document's apply the state cache is written, unless another apply comes first. */
const CACHE_DELAY_MS = 1_000;
/** The longest an applied document waits for the cache while changes keep coming. */
const CACHE_MAX_DELAY_MS = 5_000;

const consoleLogger: AgentLogger = {
  info: (m, f) => console.info(`[agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
  warn: (m, f) => console.warn(`[agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
  error: (m, f) => console.error(`[agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
};

export class HostAgent extends EventEmitter<{
  applied: [HostAgentState & { result: ApplyResult }];
  drift: [string[]];
  refused: [TokenRefusedError];
  state: [HostAgentState];
}> {
  readonly state: HostAgentState = {
    connected: false,
    hostId: null,
    appliedRevision: null,
    lastError: null,
    repairs: 0,
    startedFrom: 'CONTROLLER',
    cachedRevision: null,
  };
  private readonly logger: AgentLogger;
  private connection: ControllerConnection | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopTunnels: (() => void) | undefined;
  private readonly abort = new AbortController();
  private pending: Job | undefined;
  /** Applies the pending job, one at a time; a job set during an apply gets one more run. */
  private readonly applies = new CoalescingRunner(() => this.applyPending());
  private repairNext = true;
  private last: { revision: number; desired: DesiredState; failed: number } | undefined;
  /** The newest document received (patches apply to it). */
  private received: DesiredState | undefined;
  /** Status last reported per object ("APPLIED" or the error), so unchanged ones are not sent again. */
  private reported = new Map<string, string>();
  /** The objects last reported with an error (those of `reported` not APPLIED). */
  private readonly unapplied = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private polls = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private lastDiscoveredAt = 0;
  /** Whether `gc` ran since start (it runs after the first successful apply). */
  private collected = false;
  private readonly cache: StateCache | undefined;
  /** Whether a drift check is under way. */
  private checkingDrift = false;
  /** No drift check starts before this time (performance.now()): the last one's duration times DRIFT_REST_FACTOR after it ended. */
  private driftRest = 0;
  /** Stops the drift check under way: a revision to apply came (the check's listing would compete with the apply). */
  private driftCheck: AbortController | undefined;
  /** The newest applied document the cache does not hold yet, and since when one has been waiting. */
  private unsaved: { desired: DesiredState; since: number } | undefined;
  private cacheTimer: NodeJS.Timeout | undefined;
  private readonly cacheSaves = new CoalescingRunner(() => this.saveUnsaved());
  /** Whether an apply waits for the cache write (a full document is stored before its apply is reported). */
  private savingForApply = false;
  private resubscribeTimer: NodeJS.Timeout | undefined;
  /** Failed subscriptions in a row (reset by a message). */
  private resubscribes = 0;
  private traffic: TrafficReporter | undefined;
  private stopDiagnoses: (() => void) | undefined;

  constructor(private readonly options: HostAgentOptions) {
    super();
    this.logger = options.logger ?? consoleLogger;
    this.cache = options.stateDir === undefined ? undefined : new StateCache(options.stateDir, { pause: () => this.cachePause() });
  }

  /**
   * Applies the cached state (when there is a usable one), then connects and starts converging;
   * resolves once the subscription is requested.
   */
  async start(): Promise<void> {
    const o = this.options;
    const interval = o.driftIntervalMs ?? 2000;
    // drift is repaired against the cached state too, before any controller answers
    this.timers.push(setInterval(() => void this.pollDrift(), interval));
    this.timers.push(setInterval(() => void this.collect(), o.gcIntervalMs ?? 600_000));
    const cached = await this.applyCachedState();
    this.connection = new ControllerConnection({
      url: o.controllerUrl,
      token: o.token,
      logger: this.logger,
      backoff: o.backoff,
      onConnected: () => {
        this.state.connected = true;
        this.repairNext = true; // re-converge from scratch after every (re)connect
        this.lastDiscoveredAt = 0; // and say which instances are here now: some may have come or gone while away
        this.logger.info('connected to the controller', { url: this.connection?.url });
        this.emit('state', { ...this.state });
      },
      onClosed: (code, reason) => {
        if (this.state.connected) this.logger.warn('connection to the controller closed; reconnecting', { code, reason });
        this.state.connected = false;
        this.emit('state', { ...this.state });
      },
      onRefused: (error) => {
        this.logger.error(error.message);
        this.emit('refused', error);
      },
    });
    const hostId = o.hostId ?? (await this.lookUpHost());
    if (cached !== undefined && cached !== hostId)
      this.logger.error(`the cached state was of host ${cached} but the token is for host ${hostId}: converging to host ${hostId}'s desired state`);
    this.state.hostId = hostId;
    this.subscribe();
    // streams go only to addresses of the newest document's instances
    this.stopTunnels = serveTunnels(
      this.connection,
      hostId,
      { ...o.tunnel, controllerUrl: () => this.connection!.url, token: o.token, logger: this.logger },
      () => this.received,
    );
    this.stopDiagnoses = this.connection.diagnosisRequests(
      hostId,
      (request) => void this.diagnose(request),
      (error) => {
        // a controller before forward diagnosis does not know the subscription: nothing to retry
        const errors = Array.isArray(error) ? error : [error];
        this.logger.warn('the controller does not take forward diagnoses from this agent', {
          error: errors.map((e) => String((e as Error)?.message ?? e)).join('; '),
        });
      },
    );
    if ((o.statsIntervalMs ?? 1000) > 0) {
      this.traffic = new TrafficReporter(
        {
          driver: o.driver,
          logger: this.logger,
          hostId: () => this.state.hostId,
          applied: () => this.last?.desired,
          connected: () => this.state.connected,
          ctx: (desired) => this.ctx(desired),
          request: (query, variables) => this.connection!.request(query, variables),
        },
        o.statsIntervalMs ?? 1000,
      );
      await this.traffic.start();
    }
  }

  /**
   * Applies the state cache's document at once, as a repair, before connecting; returns its
   * host id (undefined without a usable cache). A refused cache is logged and nothing of it applied.
   */
  private async applyCachedState(): Promise<string | undefined> {
    if (!this.cache) return undefined;
    let cached;
    try {
      cached = await this.cache.load(this.options.hostId);
    } catch (err) {
      this.logger.error(err instanceof StateCacheRefusedError ? err.message : `reading the state cache failed: ${(err as Error).message}`);
      return undefined;
    }
    if (!cached) {
      this.logger.info('no cached desired state; waiting for the controller', { path: this.cache.path });
      return undefined;
    }
    this.logger.info(`applying the cached desired state revision ${cached.revision} before connecting`, { path: this.cache.path, savedAt: cached.savedAt });
    this.state.hostId = cached.hostId;
    this.state.startedFrom = 'CACHE';
    this.state.cachedRevision = cached.revision;
    this.pending = { revision: cached.revision, desired: cached.desired, repair: true, drift: [], changed: 'all' };
    await this.work();
    return cached.hostId;
  }

  /**
   * Stores an applied document in the state cache: a full document at once (before its apply is
   * reported), a patched one later (CACHE_DELAY_MS after the last apply, at most
   * CACHE_MAX_DELAY_MS after the first one not stored, and on stop). Writing the cache serialises,
   * hashes and syncs the whole document (about a second of the agent's time at 250,000 forwards):
   * once per burst of changes rather than once per change, and never between a change and the
   * apply of the next one.
   */
  private async storeApplied(desired: DesiredState, full: boolean): Promise<void> {
    if (!this.cache) return;
    this.unsaved = { desired, since: this.unsaved?.since ?? performance.now() };
    if (this.cacheTimer) clearTimeout(this.cacheTimer);
    this.cacheTimer = undefined;
    if (full) {
      this.savingForApply = true;
      try {
        return await this.cacheSaves.run();
      } finally {
        this.savingForApply = false;
      }
    }
    const wait = Math.max(0, Math.min(CACHE_DELAY_MS, this.unsaved.since + CACHE_MAX_DELAY_MS - performance.now()));
    this.cacheTimer = setTimeout(() => {
      this.cacheTimer = undefined;
      void this.cacheSaves.run();
    }, wait);
    this.cacheTimer.unref();
  }

  /**
   * Between two slices of a cache write: a turn of the event loop, and none of the write's work
   * while a revision is being applied (unless the write is that apply's own, a full document's).
   */
  private async cachePause(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    while ((this.working || this.pending) && !this.savingForApply && !this.abort.signal.aborted) await new Promise((resolve) => setTimeout(resolve, 2));
  }

  /** Stores the newest applied document not stored yet (one write at a time, so an older one never lands last). */
  private async saveUnsaved(): Promise<void> {
    const unsaved = this.unsaved;
    this.unsaved = undefined;
    if (unsaved) await this.storeInCache(unsaved.desired);
  }

  /** Stores an applied document as the last-known-good state; a failed write is logged, the apply stands. */
  private async storeInCache(desired: DesiredState): Promise<void> {
    if (!this.cache) return;
    try {
      await this.cache.save(desired);
    } catch (err) {
      this.logger.warn('storing the last-known-good state failed; a restart without the controller would not restore it', {
        path: this.cache.path,
        error: (err as Error).message,
      });
    }
  }

  /** Stops: no more applies or reports; what was applied stays on the host. */
  async stop(): Promise<void> {
    this.abort.abort();
    for (const t of this.timers) clearInterval(t);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.cacheTimer) clearTimeout(this.cacheTimer);
    // what was applied and not stored yet goes to the cache now
    await this.cacheSaves.run();
    if (this.resubscribeTimer) clearTimeout(this.resubscribeTimer);
    await this.traffic?.stop();
    this.unsubscribe?.();
    this.stopTunnels?.();
    this.stopDiagnoses?.();
    await this.connection?.close();
    await this.options.driver.close?.();
  }

  private async lookUpHost(): Promise<string> {
    const data = await this.connection!.request<{ agentHost: { id: string } | null }>(AGENT_HOST_QUERY, {});
    if (!data.agentHost) throw new Error('this token is not an agent token bound to a host; pass --host');
    return data.agentHost.id;
  }

  /** (Re)subscribes to the host's desired state: the controller sends the full document first. */
  private subscribe(): void {
    this.unsubscribe?.();
    this.received = undefined;
    this.unsubscribe = this.connection!.desiredState(
      this.state.hostId!,
      (event) => this.receive(event),
      (error) => {
        // graphql-ws hands over the GraphQL errors themselves (a list), or a close event, or an Error
        const errors = Array.isArray(error) ? error : [error];
        this.state.lastError = errors.map((e) => String((e as Error)?.message ?? e)).join('; ');
        this.logger.error('desired-state subscription failed; subscribing again', { error: this.state.lastError });
        this.resubscribeLater();
      },
    );
  }

  /**
   * Subscribes again after a failed subscription (the controller's database restarting, say),
   * after 1 s doubling to 30 s; the connection itself is fine, so nothing else would. What is
   * applied stays meanwhile.
   */
  private resubscribeLater(): void {
    if (this.abort.signal.aborted || this.resubscribeTimer) return;
    const ms = Math.min(30_000, 1000 * 2 ** Math.min(this.resubscribes++, 5));
    this.resubscribeTimer = setTimeout(() => {
      this.resubscribeTimer = undefined;
      if (!this.abort.signal.aborted) this.subscribe();
    }, ms);
    this.resubscribeTimer.unref();
  }

  /** Checks a message, folds a patch into the newest document, and queues the result. */
  private receive(event: DesiredStateEvent): void {
    let desired: DesiredState;
    let changed: Set<string> | 'all';
    try {
      if (event.full != null) {
        desired = validateDesiredState(event.full, 'document');
        if (desired.hostId !== this.state.hostId)
          throw new DriverConfigError('document.hostId', desired.hostId, `is not this agent's host ${this.state.hostId}`);
        // checked once: the driver's apply and the first patch's base check trust it (115 ms each at 60,000 forwards)
        markValid(desired);
        changed = 'all';
      } else if (event.patch != null) {
        if (!this.received) throw new DriverConfigError('patch', event.revision, 'arrived before a full document');
        ({ state: desired, changed } = applyDesiredStatePatch(this.received, event.patch, 'patch'));
      } else {
        throw new DriverConfigError('message', event.revision, 'carries neither a full document nor a patch');
      }
    } catch (err) {
      // a misbehaving controller: apply nothing, say why; a patch that does not fit means starting over
      const message = `refused desired state revision ${event.revision}: ${(err as Error).message}`;
      this.logger.error(message);
      this.state.lastError = message;
      this.reportHost({ ...this.hostReport(), error: reportText(message) });
      if (event.patch != null && this.received) {
        this.logger.warn('asking the controller for the full document again');
        this.subscribe();
      }
      return;
    }
    this.received = desired;
    this.resubscribes = 0;
    const before = this.pending;
    const merged = changed === 'all' || before?.changed === 'all' ? 'all' : new Set([...(before?.changed ?? []), ...changed]);
    this.pending = { revision: desired.revision, desired, repair: this.repairNext || (before?.repair ?? false), drift: [], changed: merged };
    this.repairNext = false;
    this.failures = 0; // a new document starts a new backoff
    // and replaces any retry of an older one (which would otherwise re-apply that older revision)
    if (this.retryTimer) clearTimeout(this.retryTimer);
    // a drift check under way is of the state this replaces: its listing (at 60,000 forwards a
    // second of the kernel's time, nft 1.0.6 fetching every element) would only slow the apply
    this.driftCheck?.abort(new Error('a new revision arrived'));
    void this.work();
  }

  private work(): Promise<void> {
    return this.applies.run();
  }

  private get working(): boolean {
    return this.applies.running;
  }

  private async applyPending(): Promise<void> {
    const job = this.pending;
    if (!job || this.abort.signal.aborted) return;
    this.pending = undefined;
    await this.converge(job);
  }

  private ctx(desired?: DesiredState): DriverContext {
    const log = this.logger;
    return {
      logger: { debug: () => undefined, info: log.info.bind(log), warn: log.warn.bind(log), error: log.error.bind(log) },
      signal: this.abort.signal,
      host: { id: this.state.hostId ?? '', name: desired?.hostName ?? '', publicAddresses: desired?.publicAddresses ?? [] },
    };
  }

  private async converge(job: Job): Promise<void> {
    const { desired, revision } = job;
    const started = performance.now();
    this.logger.info(`applying revision ${revision}`, { repair: job.repair, instances: desired.instances.length });
    const driver = this.options.driver;
    // what the driver cannot apply is not handed to it, and reported failed
    const unsupported = unsupportedObjects(driver.capabilities, desired, driver.id);
    const applicable = withoutObjects(desired, unsupported);
    let result: ApplyResult;
    try {
      result = await driver.apply(this.ctx(desired), { desired: applicable, repair: job.repair });
    } catch (err) {
      const error = toDriverError(err);
      this.failures++;
      this.state.lastError = `${error.code}: ${error.message}`;
      const retry = error.retryable;
      this.logger.error(retry ? 'apply failed; retrying' : 'apply failed; waiting for a new revision', {
        revision,
        error: this.state.lastError,
        attempt: this.failures,
      });
      this.reportHost({ ...this.hostReport(), error: reportText(this.state.lastError) });
      if (retry) this.retryLater(job, true);
      return;
    }
    await this.storeApplied(desired, job.changed === 'all');
    const failed = result.objects.filter((o) => o.status === 'failed');
    const previous = this.last;
    this.last = { revision, desired: applicable, failed: failed.length };
    if (unsupported.length > 0) result = { ...result, objects: [...result.objects, ...unsupported] };
    const allFailed = unsupported.length > 0 ? [...failed, ...unsupported] : failed;
    this.state.appliedRevision = revision;
    this.state.lastError = allFailed.length > 0 ? summarize(allFailed) : null;
    if (job.drift.length > 0) this.state.repairs++;
    this.logger.info('applied', {
      revision,
      changed: result.changed,
      repair: job.repair,
      failed: failed.length,
      ms: Math.round(performance.now() - started),
    });
    this.emit('applied', { ...this.state, result });
    await this.reportApplied(revision, result, job);
    // objects that failed for a reason that may pass (nft missing, an instance not here yet) are
    // tried again, with backoff; the rest wait for a revision that changes them
    if (failed.some((o) => o.error === undefined || isRetryable(o.error))) {
      this.failures++;
      this.retryLater({ ...job, drift: [], changed: new Set() }, false);
    } else {
      this.failures = 0;
      if (this.retryTimer) clearTimeout(this.retryTimer);
    }
    if (previous) await this.release(previous.desired, applicable);
    if (!this.collected) await this.collect();
  }

  /** Releases each instance of `before` that `after` no longer has (the driver's cleanup beyond its objects). */
  private async release(before: DesiredState, after: DesiredState): Promise<void> {
    if (before === after || before.instances.length === 0) return;
    const kept = new Set(after.instances.map((i) => i.id));
    for (const instance of before.instances) {
      if (kept.has(instance.id) || this.abort.signal.aborted) continue;
      try {
        await this.options.driver.release(this.ctx(after), { instanceId: instance.id });
        this.logger.info('released an instance that left the desired state', { instanceId: instance.id, name: instance.name });
      } catch (err) {
        // gc removes what is left of it later
        this.logger.warn('releasing an instance failed', { instanceId: instance.id, error: toDriverError(err).message });
      }
    }
  }

  /** Runs the driver's gc with the instance ids of the last applied document (nothing before the first apply). */
  private async collect(): Promise<void> {
    const last = this.last;
    if (!last || this.abort.signal.aborted) return;
    this.collected = true;
    try {
      const validInstanceIds = last.desired.instances.map((i) => i.id);
      const { removedInstanceIds } = await this.options.driver.gc(this.ctx(last.desired), { validInstanceIds });
      if (removedInstanceIds.length > 0) this.logger.info('removed leftovers of instances no longer on this host', { instanceIds: removedInstanceIds });
    } catch (err) {
      this.logger.warn('gc failed', { error: toDriverError(err).message });
    }
  }

  /** Applies `job` again after a backoff (0.5 s doubling to 30 s), unless a newer revision came meanwhile. */
  private retryLater(job: Job, repair: boolean): void {
    const ms = Math.min(30_000, 500 * 2 ** Math.min(this.failures - 1, 6));
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      // superseded: a newer revision arrived (it may still be being applied, so `last` can be older)
      if (this.received !== undefined && this.received.revision > job.revision) return;
      if (!this.pending && this.last !== undefined && this.last.revision > job.revision) return;
      if (!this.pending) this.pending = { ...job, repair };
      void this.work();
    }, ms);
    this.retryTimer.unref();
  }

  private hostReport(): ReportHostStatusInput {
    const driver = this.options.driver;
    return {
      hostId: this.state.hostId!,
      agentVersion: this.options.version ?? '0.1.0',
      pluginId: driver.id,
      driver: { id: driver.id, version: driver.version ?? null, apiVersion: driver.apiVersion, capabilities: driver.capabilities },
      appliedRevision: this.state.appliedRevision,
      startedFrom: this.state.startedFrom,
      cachedRevision: this.state.cachedRevision,
    };
  }

  /**
   * Reports the objects the applied documents changed and those whose status changed (all of
   * them after a full document), then the host's status.
   */
  private async reportApplied(revision: number, result: ApplyResult, job: Job): Promise<void> {
    const drift = job.drift.length > 0;
    const changed = job.changed;
    if (changed === 'all') {
      this.reported.clear();
      this.unapplied.clear();
    }
    const objects: WireObjectStatus[] = [];
    // the objects the documents changed that are still there (the others went: forgotten below)
    const seen = new Set<string>();
    for (const o of result.objects) {
      if (!(o.objectType in STATUS_OBJECT_TYPES)) continue;
      // an applied object the documents did not change was reported applied already (or with its
      // error, then it is in `unapplied`): one look-up in the few changed ids, not one among all objects
      if (changed !== 'all') {
        if (changed.has(o.objectId)) seen.add(o.objectId);
        else if (o.status === 'applied' && (this.unapplied.size === 0 || !this.unapplied.has(o.objectId))) continue;
      }
      const error = o.error ? reportText(`${o.error.code}: ${o.error.message}`) : null;
      const key = error ?? 'APPLIED';
      if (changed !== 'all' && !changed.has(o.objectId) && this.reported.get(o.objectId) === key) continue;
      this.reported.set(o.objectId, key);
      if (error === null) this.unapplied.delete(o.objectId);
      else this.unapplied.add(o.objectId);
      objects.push({
        objectType: STATUS_OBJECT_TYPES[o.objectType],
        objectId: o.objectId,
        status: error === null ? 'APPLIED' : 'FAILED',
        error,
      });
    }
    if (changed !== 'all') {
      for (const id of changed) {
        if (seen.has(id)) continue;
        this.reported.delete(id);
        this.unapplied.delete(id);
      }
    }
    for (let i = 0; i < objects.length || i === 0; i += 10_000) {
      if (objects.length > 0) this.report(REPORT_OBJECT_STATUS_MUTATION, { hostId: this.state.hostId!, revision, objects: objects.slice(i, i + 10_000) });
    }
    const input: ReportHostStatusInput = {
      ...this.hostReport(),
      error: this.state.lastError === null ? null : reportText(this.state.lastError),
      driftDetected: drift,
    };
    const discovered = await this.discoverIfDue();
    if (discovered) Object.assign(input, discovered);
    this.reportHost(input);
  }

  /**
   * The host's instances as the controller takes them, and its listening sockets (the port
   * audit), when `discoverIntervalMs` has passed since the last discovery (undefined otherwise, or
   * when the backend cannot be asked).
   */
  private async discoverIfDue(): Promise<Pick<ReportHostStatusInput, 'discoveredInstances' | 'listeningSockets'> | undefined> {
    if (Date.now() - this.lastDiscoveredAt < (this.options.discoverIntervalMs ?? 60_000)) return undefined;
    try {
      const { instances } = await this.options.driver.discover(this.ctx(), {});
      this.lastDiscoveredAt = Date.now();
      const discoveredInstances = instances.slice(0, 1000).map((i) => ({
        externalId: i.externalId,
        name: i.name,
        running: i.running,
        nics: i.nics.slice(0, 64).map((n) => ({ name: n.name, ...(n.mac ? { mac: n.mac } : {}), addresses: n.addresses.slice(0, 64) })),
      }));
      return { discoveredInstances, listeningSockets: await this.listeningSockets() };
    } catch (err) {
      this.logger.warn('discovering instances failed', { error: (err as Error).message });
      return undefined;
    }
  }

  /** The host's listening sockets; null (unchanged) when switched off or unreadable. */
  private async listeningSockets(): Promise<ListeningSocketInput[] | null> {
    if (this.options.portAudit === false) return null;
    try {
      return await readListeningSockets(this.options.portAudit);
    } catch (err) {
      this.logger.warn('reading the listening sockets failed', { error: (err as Error).message });
      return null;
    }
  }

  /**
   * Answers one forward diagnosis request with the driver's `diagnoseForward` against the state
   * applied last (or why there is none: a driver without it, nothing applied yet, a failure).
   */
  private async diagnose(request: DiagnosisRequest): Promise<void> {
    const driver = this.options.driver;
    const desired = this.last?.desired;
    const answer: ReportPortForwardDiagnosisInput = { hostId: this.state.hostId!, requestId: request.requestId };
    if (!driver.diagnoseForward) answer.error = `the ${driver.id} driver cannot diagnose forwards`;
    else if (!desired) answer.error = 'nothing is applied on this host yet';
    else {
      try {
        const d = await driver.diagnoseForward(this.ctx(desired), { desired, forwardId: request.portForwardId, sourceAddress: request.sourceAddress });
        answer.verdict = d.verdict;
        answer.findings = d.findings.slice(0, MAX_DIAGNOSIS_FINDINGS).map((f) => ({ ...f, detail: reportText(f.detail) || f.verdict }));
      } catch (err) {
        answer.error = reportText(`diagnosing failed: ${(err as Error).message}`);
      }
    }
    this.report(REPORT_DIAGNOSIS_MUTATION, answer);
  }

  /** Sends the host's status (see `report`). */
  private reportHost(input: ReportHostStatusInput): void {
    this.report(REPORT_HOST_STATUS_MUTATION, input);
  }

  /** Sends a report without holding up the next apply; a lost one is repeated after reconnect. */
  private report(mutation: string, input: object): void {
    this.connection
      ?.request<Record<string, { __typename: string; message?: string }>>(mutation, { input })
      .then((data) => {
        const answer = Object.values(data)[0];
        if (answer && answer.message) this.logger.warn('the controller refused a report', { error: answer.message, type: answer.__typename });
      })
      .catch((err: unknown) => {
        if (!this.abort.signal.aborted) this.logger.warn('report not delivered', { error: (err as Error).message });
      });
  }

  private async pollDrift(): Promise<void> {
    const last = this.last;
    // one check at a time: at 60,000 forwards a listing can take longer than the interval, and
    // checks started on every tick piled up (a dozen nft processes listing the table at once)
    if (!last || this.working || this.pending || this.abort.signal.aborted || this.checkingDrift) return;
    // and at most a fifth of the time: with nft 1.0.6 even the cheap check lists every element (3.4 s
    // at 60,000 forwards, 21 s at 250,000), which every 2 s kept a core busy and slowed each change
    if (performance.now() < this.driftRest) return;
    this.checkingDrift = true;
    const started = performance.now();
    try {
      await this.checkDrift(last);
    } finally {
      this.checkingDrift = false;
      const now = performance.now();
      this.driftRest = now + DRIFT_REST_FACTOR * (now - started);
    }
  }

  private async checkDrift(last: NonNullable<HostAgent['last']>): Promise<void> {
    // a quiet host is discovered too: instances created or deleted on the backend reach the controller
    const discovered = await this.discoverIfDue();
    if (discovered) {
      this.reportHost({
        ...this.hostReport(),
        error: this.state.lastError === null ? null : reportText(this.state.lastError),
        ...discovered,
      });
    }
    const thorough = this.polls++ % (this.options.thoroughEvery ?? 15) === 0;
    const stop = new AbortController();
    this.driftCheck = stop;
    const ctx = { ...this.ctx(last.desired), signal: AbortSignal.any([this.abort.signal, stop.signal]) };
    try {
      const driver = this.options.driver;
      // without the driver's own check, failed objects would look like drift: their retry covers them
      if (!driver.drift && last.failed > 0) return;
      const differences = driver.drift
        ? (await driver.drift(ctx, { desired: last.desired, thorough })).differences
        : diffObservation(expectedObservation(last.desired), (await driver.observe(ctx, { desired: last.desired })).state);
      if (differences.length === 0 || this.working || this.pending || this.last !== last) return;
      this.logger.warn('the host drifted from the applied state; repairing', { revision: last.revision, differences: differences.slice(0, 10) });
      this.emit('drift', differences);
      this.pending = { revision: last.revision, desired: last.desired, repair: true, drift: differences, changed: new Set() };
      await this.work();
    } catch (err) {
      // stopped for a new revision: the next poll checks the state it makes
      if (!stop.signal.aborted) this.logger.warn('drift check failed', { error: (err as Error).message });
    } finally {
      if (this.driftCheck === stop) this.driftCheck = undefined;
    }
  }
}

/** Error text as the controller takes it: one line (tool output has newlines), at most 2,000 characters. */
function reportText(text: string): string {
  return text
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .trim()
    .slice(0, 2000);
}

function summarize(failed: ObjectResult[]): string {
  const first = failed[0]!;
  const more = failed.length > 1 ? ` (and ${failed.length - 1} more)` : '';
  return `${first.objectType} ${first.objectId}: ${first.error?.code ?? 'FAILED'}: ${first.error?.message ?? ''}${more}`.slice(0, 2000);
}
