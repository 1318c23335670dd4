/**
 * The controller process: store, DI container, GraphQL over HTTP (yoga, with GraphiQL) and over
 * WebSocket (graphql-ws) on the same port and path, host agents' tunnel streams (`/agent-stream`)
 * and, when configured, the SSH jump server.
 */
import 'reflect-metadata';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GraphQLError, NoSchemaIntrospectionCustomRule } from 'graphql';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { GRAPHIQL_EXAMPLES } from './graphql/graphiql-examples.js';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { useServer } from 'graphql-ws/use/ws';
import { TUNNEL_STREAM_PATH } from '@gatehouse/agent-protocol';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { WebSocketServer } from 'ws';
import type { Actor } from './auth/actor.js';
import { SignInLimiter } from './auth/sign-in-limiter.js';
import { TokenRevocations } from './auth/token-revocations.js';
import { GatehouseError } from './support/errors.js';
import { createWebAppHandler } from './http/web-app.js';
import { openStore, type Store, type StoreConfig } from './db/database.js';
import { createEventBus } from './events/event-bus.js';
import { createLoaders, resolveServices, type GraphQLContext } from './graphql/context.js';
import { gatehouseSchema } from './graphql/schema.js';
import { sharedSubscriptionResults } from './graphql/shared-subscription-results.js';
import { newId } from './support/ids.js';
import { UnexpectedErrorLog, quietLogger, type Logger } from './support/logger.js';
import { DEFAULT_AGENT_PRESENCE, HostAgentService } from './services/host-agent-service.js';
import { MAX_CSV_BYTES, PortForwardImportService } from './services/port-forward-import-service.js';
import { UserService } from './services/user-service.js';
import { AllocationQueue } from './services/allocation-queue.js';
import { TunnelBroker } from './tunnel/tunnel-broker.js';
import { DiagnosisBroker } from './services/diagnosis-broker.js';
import { startJumpServer, type JumpServer, type JumpServerOptions } from './ssh/jump-server.js';
import { SshAccessService } from './services/ssh-access-service.js';
import { SshKeyService } from './services/ssh-key-service.js';
import { TerminalService } from './services/terminal-service.js';
import { TerminalRecordingService, type RecordingSettings } from './services/terminal-recording-service.js';
import { InternalLogins } from './ssh/internal-logins.js';
import { TERMINAL_PATH, TerminalGateway, type TerminalGatewayOptions } from './ssh/terminal-gateway.js';
import { isStoreUnavailable, unavailableReason } from './support/unavailable.js';
import { AgentPresenceToken, ClockToken, DatabaseToken, EventBusToken, LoggerToken, type AgentPresenceOptions, type Clock } from './di/tokens.js';
import { ProxyManagerToken } from './proxy/proxy-manager-token.js';
import { CaddySupervisor } from './proxy/caddy-process.js';
import { ProxyManager, type ProxyManagerOptions } from './proxy/proxy-manager.js';
import { TrafficHistory } from './traffic/traffic-history.js';
import { TrafficIngest } from './traffic/traffic-ingest.js';
import { TrafficQuota } from './traffic/traffic-quota.js';
import { ControllerMetrics, METRICS_PATH } from './traffic/metrics.js';
import { TrafficLive } from './traffic/traffic-live.js';

export type { Logger } from './support/logger.js';

/** Options of `startController`. */
export interface ControllerOptions {
  store: StoreConfig;
  port?: number;
  host?: string;
  logger?: Logger;
  /** Create the first admin and its token on an empty store (default true). */
  bootstrap?: boolean;
  /** Agent presence: heartbeat period and offline age (defaults 10 s and 30 s; tests shorten them). */
  agentPresence?: Partial<AgentPresenceOptions>;
  /** Serve GraphiQL at /graphql and answer introspection without a token; default: on unless NODE_ENV=production. */
  graphiql?: boolean;
  /** The reverse proxy: a Caddy this controller runs, or one it reaches; absent: web proxies stay PENDING. */
  proxy?: ControllerProxyOptions;
  /** A built single-page app (its directory, holding index.html) to serve at every path outside the API. */
  webAppDir?: string;
  /** The SSH jump server (`ssh -J`); absent: none. A port in use is logged and the controller serves without it. */
  ssh?: JumpServerOptions;
  /** Web terminal settings (idle timeout, limits); it runs whenever the jump server does. */
  terminal?: Omit<TerminalGatewayOptions, 'jump'>;
  /** Where recordings of web terminals go (users an admin switched recording on for); absent: none are made. */
  recordings?: RecordingSettings;
  /** The clock of traffic ingest, rollups and billing periods (default: the system's). */
  clock?: Clock;
  /**
   * Also serve `/metrics` without a token on this address (for a Prometheus server on a private
   * network); on the API port `/metrics` always needs an admin token. Absent: no such listener.
   */
  metricsListen?: { host: string; port: number };
}

/** How the controller drives Caddy. */
export type ControllerProxyOptions = Omit<ProxyManagerOptions, 'admin' | 'adminConfig'> &
  (
    | { /** Run `caddy` with its admin socket, storage and log in this directory. */ run: { dir: string; binary?: string } }
    | Pick<ProxyManagerOptions, 'admin' | 'adminConfig'>
  );

/** Options of `createContainer`. */
export interface ContainerOptions {
  logger?: Logger;
  agentPresence?: Partial<AgentPresenceOptions>;
  /** Default: the system clock. */
  clock?: Clock;
}

const systemClock: Clock = { now: () => new Date() };

/** A running controller. */
export interface Controller {
  readonly url: string;
  readonly store: Store;
  readonly container: DependencyContainer;
  /** The first admin token's secret, when this start created it. */
  readonly bootstrapSecret?: string;
  /** The first admin's one-time sign-in password, when this start created it. */
  readonly bootstrapPassword?: string;
  /** The SSH jump server, when one was asked for and it listens. */
  readonly ssh?: JumpServer;
  /** The separate metrics listener's URL (`metricsListen`), when there is one. */
  readonly metricsUrl?: string;
  close(): Promise<void>;
}

function validPresence(options: Partial<AgentPresenceOptions> = {}): AgentPresenceOptions {
  const presence = { ...DEFAULT_AGENT_PRESENCE, ...options };
  for (const [name, value] of Object.entries(presence)) {
    if (!Number.isFinite(value) || value <= 0) throw new Error(`agentPresence.${name} ${JSON.stringify(value)} must be a positive number of milliseconds`);
  }
  return presence;
}

/** Builds the DI container for an open store. */
export function createContainer(store: Store, options: ContainerOptions = {}): DependencyContainer {
  const child = rootContainer.createChildContainer();
  child.registerInstance(DatabaseToken, store.db);
  child.registerInstance(EventBusToken, createEventBus(store.eventTarget));
  child.registerInstance(LoggerToken, options.logger ?? quietLogger);
  child.registerInstance(AgentPresenceToken, validPresence(options.agentPresence));
  child.registerInstance(ClockToken, options.clock ?? systemClock);
  // state everything on this container must share: presence bookkeeping, revocation watchers, live rates, the rollup timer
  child.registerSingleton(HostAgentService);
  child.registerSingleton(TokenRevocations);
  // failed sign-ins are counted per controller, across requests
  child.registerInstance(SignInLimiter, new SignInLimiter());
  child.registerSingleton(TunnelBroker);
  child.registerSingleton(DiagnosisBroker);
  // whether the web terminal runs is known once the jump server has started
  child.registerSingleton(TerminalService);
  child.registerSingleton(TerminalRecordingService);
  child.registerSingleton(TrafficLive);
  child.registerSingleton(TrafficHistory);
  child.registerSingleton(TrafficQuota);
  // one per controller: it batches the reports arriving while a batch is written
  child.registerSingleton(TrafficIngest);
  // one per controller: it batches the allocations arriving while a batch is written
  child.registerSingleton(AllocationQueue);
  child.registerSingleton(ControllerMetrics);
  child.resolve(TrafficLive).start();
  return child;
}

function bearerOf(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(value.trim());
  return m?.[1];
}

function requestIdOf(header: string | null | undefined): string {
  return header && /^[A-Za-z0-9._-]{1,64}$/.test(header) ? header : newId();
}

// GraphQL errors we or a plugin raised on purpose (validation, limits); also across graphql copies
function isGraphQLError(value: unknown): boolean {
  return value instanceof GraphQLError || (value instanceof Error && 'extensions' in value && 'locations' in value);
}

/** Largest request body accepted (bytes). */
export const MAX_REQUEST_BYTES = 2 * MAX_CSV_BYTES;

/**
 * Ends HTTP (SSE) subscriptions when their token is revoked. graphql-ws subscriptions are not
 * wrapped: their whole connection is closed with 4403 instead (see `startController`).
 */
function endOnRevocation(revocations: TokenRevocations): Plugin<Record<string, unknown>, GraphQLContext> {
  return {
    onSubscribe: () => ({
      onSubscribeResult: ({ args, result, setResult }) => {
        const context = args.contextValue as unknown as GraphQLContext & { wsActor?: Actor | null };
        if (!context.actor || context.wsActor !== undefined || !(Symbol.asyncIterator in Object(result))) return;
        setResult(revocations.bound(context.actor.tokenId, result as AsyncIterable<never>) as never);
      },
    }),
  };
}

/** GraphiQL (and introspection without a token) is on unless NODE_ENV=production. */
export function graphiqlByDefault(env = process.env): boolean {
  return env.NODE_ENV !== 'production';
}

/**
 * Without GraphiQL, the schema is only for callers with a token: an HTTP request without an
 * Authorization header may not introspect (one with a header that turns out invalid is refused
 * with 401 before it runs; graphql-ws connections are authenticated when they open).
 */
function introspectionNeedsToken(): Plugin {
  return {
    onValidate({ addValidationRule, context }) {
      const request = (context as { request?: Request }).request;
      if (request && !request.headers.get('authorization')) addValidationRule(NoSchemaIntrospectionCustomRule);
    },
  };
}

/** What the HTTP server (node's request) or the graphql-ws server hands yoga per operation. */
interface YogaServerContext {
  req?: IncomingMessage;
  wsActor?: Actor | null;
  wsRequestId?: string;
  wsClientAddress?: string;
}

/** Creates the yoga instance for a container (exported for in-process tests). */
export function createGatehouseYoga(
  container: DependencyContainer,
  logger: Logger = quietLogger,
  options: { graphiql?: boolean } = {},
): YogaServerInstance<YogaServerContext, GraphQLContext> {
  const services = resolveServices(container);
  const users = container.resolve(UserService);
  const revocations = container.resolve(TokenRevocations);
  revocations.start();
  const unexpected = new UnexpectedErrorLog(logger);
  return createYoga<YogaServerContext, GraphQLContext>({
    schema: gatehouseSchema(),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // twice the largest CSV import: bigger bodies are refused with 413 before they are parsed
    maxRequestBodySize: MAX_REQUEST_BYTES,
    // GraphiQL with its assets inlined: it works without internet access
    renderGraphiQL,
    // the README's walkthrough as tabs; new tabs open on its first step
    graphiql:
      (options.graphiql ?? graphiqlByDefault())
        ? {
            title: 'Gatehouse GraphiQL',
            defaultQuery: GRAPHIQL_EXAMPLES[0]!.query,
            defaultTabs: GRAPHIQL_EXAMPLES.map((tab) => ({ query: tab.query, variables: tab.variables ?? null })),
          }
        : false,
    logging: false,
    plugins: [
      // trafficUpdated: one execution per event and document, shared by the subscribers given that event
      sharedSubscriptionResults(),
      endOnRevocation(revocations),
      container.resolve(ControllerMetrics).yogaPlugin(),
      ...((options.graphiql ?? graphiqlByDefault()) ? [] : [introspectionNeedsToken()]),
    ],
    maskedErrors: {
      maskError(error, message) {
        const original = (error as { originalError?: unknown }).originalError;
        if (original instanceof GatehouseError) {
          // expected failures outside mutation results (queries) keep their code and field
          return new GraphQLError(original.message, {
            path: (error as GraphQLError).path,
            extensions: { code: original.code, field: original.field, value: original.value },
          });
        }
        // the database is restarting or unreachable: a retryable answer at once, for any operation (support/unavailable.ts)
        if (isStoreUnavailable(original ?? error)) {
          return new GraphQLError(`The database is unavailable (${unavailableReason(original ?? error)}); try again`, {
            path: (error as GraphQLError).path,
            extensions: { code: 'UNAVAILABLE', http: { status: 503 } },
          });
        }
        // validation, authentication and limit errors raised as GraphQL errors pass unmasked
        if (isGraphQLError(error) && (original === undefined || original === null || isGraphQLError(original))) return error as Error;
        unexpected.error('unexpected error in resolver', original ?? error);
        return new GraphQLError(message, { extensions: { code: 'INTERNAL_SERVER_ERROR' } });
      },
    },
    context: async (initial): Promise<GraphQLContext> => {
      let actor: Actor | null;
      let requestId: string;
      const clientAddress = initial.wsClientAddress ?? initial.req?.socket.remoteAddress ?? 'unknown';
      if (initial.wsActor !== undefined) {
        actor = initial.wsActor;
        requestId = initial.wsRequestId ?? newId();
      } else {
        requestId = requestIdOf(initial.request.headers.get('x-request-id'));
        const header = initial.request.headers.get('authorization');
        const secret = bearerOf(header);
        if (header && !secret)
          throw new GraphQLError('Authorization header must be "Bearer <token>"', { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
        actor = secret ? ((await users.authenticate(secret, requestId)) ?? null) : null;
        if (secret && !actor) throw new GraphQLError('Invalid or revoked API token', { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
      }
      return { actor, requestId, clientAddress, services, loaders: createLoaders(services) };
    },
  });
}

/** An address this process can connect to for a listening address (a wildcard means loopback). */
function reachableAddress(listen: string): string {
  if (listen === '0.0.0.0' || listen === '') return '127.0.0.1';
  if (listen === '::') return '::1';
  return listen;
}

/** Paths the API answers (GraphQL over HTTP and WebSocket, GraphiQL); the web app has every other. */
function isApiPath(url: string | undefined): boolean {
  const path = (url ?? '/').split('?')[0]!;
  return path === '/graphql' || path.startsWith('/graphql/');
}

/** How long a socket closed for a revoked token gets to finish the close handshake before it is cut. */
const REVOKED_CLOSE_GRACE_MS = 5000;

/** Extra state of a graphql-ws connection. */
interface WsExtra extends Record<PropertyKey, unknown> {
  actor?: Actor;
  /** Unregisters the connection from revocation watching. */
  unwatch?: () => void;
}

/**
 * Opens the store, migrates it, and serves GraphQL on HTTP and WebSocket. A graphql-ws
 * connection is authenticated once, at connect; revoking its token closes it (4403) on every
 * replica.
 */
export async function startController(options: ControllerOptions): Promise<Controller> {
  const logger = options.logger ?? quietLogger;
  const store = await openStore(options.store);
  const container = createContainer(store, { logger, agentPresence: options.agentPresence, clock: options.clock });
  const trafficHistory = container.resolve(TrafficHistory);
  trafficHistory.start();
  // quotas: checked after each report and every 10 s (a period's end lifts throttles)
  const trafficQuota = container.resolve(TrafficQuota);
  trafficQuota.start();
  // an import a stopped controller was writing is all or nothing: its staged rows go
  const leftovers = await container.resolve(PortForwardImportService).removeLeftovers(store.kind);
  if (leftovers > 0) logger.warn(`removed ${leftovers} unfinished port forward import(s) left by a controller that stopped`);
  let bootstrap: { secret: string; password: string } | undefined;
  if (options.bootstrap !== false) {
    bootstrap = await container.resolve(UserService).bootstrapAdmin();
  }
  let caddy: CaddySupervisor | undefined;
  let proxyManager: ProxyManager | undefined;
  if (options.proxy) {
    const { run, admin, adminConfig, ...rest } = options.proxy as ControllerProxyOptions &
      Partial<{ run: { dir: string; binary?: string } } & Pick<ProxyManagerOptions, 'admin' | 'adminConfig'>>;
    if (run) {
      caddy = new CaddySupervisor(run.dir, logger, run.binary);
      caddy.start();
    }
    proxyManager = new ProxyManager(store.db, container.resolve(EventBusToken), logger, {
      ...rest,
      admin: caddy ? { socketPath: caddy.socketPath } : admin!,
      adminConfig: caddy ? caddy.adminConfig : adminConfig!,
      ...(caddy ? { restartCaddy: () => caddy!.restart() } : {}),
    });
    container.registerInstance(ProxyManagerToken, proxyManager);
    // a Caddy just started may take a moment to open its socket: the periodic check loads it then
    await proxyManager.start();
  }
  const yoga = createGatehouseYoga(container, logger, { graphiql: options.graphiql });
  const users = container.resolve(UserService);
  const revocations = container.resolve(TokenRevocations);
  const hostAgents = container.resolve(HostAgentService);
  const webApp = options.webAppDir ? createWebAppHandler(options.webAppDir) : undefined;
  const metrics = container.resolve(ControllerMetrics);
  metrics.start();
  const serveMetrics = async (request: IncomingMessage, response: ServerResponse) => {
    const secret = bearerOf(request.headers.authorization);
    const actor = secret ? ((await users.authenticate(secret, requestIdOf(request.headers['x-request-id'] as string | undefined))) ?? null) : null;
    await metrics.serve(actor, response);
  };
  const httpServer: Server = createServer((request, response) => {
    metrics.observeHttp(request, response);
    if (request.method === 'GET' && (request.url ?? '').split('?')[0] === METRICS_PATH) {
      serveMetrics(request, response).catch((err: unknown) => {
        logger.error(`/metrics: ${(err as Error).message}`);
        if (!response.headersSent) response.writeHead(500);
        response.end();
      });
      return;
    }
    if (webApp && !isApiPath(request.url)) {
      webApp(request, response).catch((err: unknown) => {
        logger.error(`web app: ${request.method} ${request.url}: ${(err as Error).message}`);
        if (!response.headersSent) response.writeHead(500);
        response.end();
      });
      return;
    }
    void yoga(request, response);
  });
  // Idle keep-alive sockets outlive the clients' own idle timeouts (undici: 4 s), so a client never
  // reuses a socket the server is closing at that instant (ECONNRESET seen under load at Node's 5 s).
  httpServer.keepAliveTimeout = 65_000;
  httpServer.headersTimeout = 66_000;
  const tunnels = container.resolve(TunnelBroker);
  let terminal: TerminalGateway | undefined;
  const wsServer = new WebSocketServer({ noServer: true });
  // WebSocket paths: GraphQL (graphql-ws) and agents' tunnel streams; anything else is refused
  httpServer.on('upgrade', (request, socket, head) => {
    const path = new URL(request.url ?? '/', 'http://controller').pathname;
    if (path === yoga.graphqlEndpoint) wsServer.handleUpgrade(request, socket, head, (ws) => wsServer.emit('connection', ws, request));
    else if (path === TUNNEL_STREAM_PATH) tunnels.handleUpgrade(request, socket, head);
    else if (path === TERMINAL_PATH && terminal) terminal.handleUpgrade(request, socket, head);
    else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  const wsHandle = useServer<Record<string, unknown>, WsExtra>(
    {
      execute: (args) => (args.rootValue as { execute: (a: unknown) => unknown }).execute(args) as never,
      subscribe: (args) => (args.rootValue as { subscribe: (a: unknown) => unknown }).subscribe(args) as never,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const secret = bearerOf(params.Authorization ?? params.authorization);
        const actor = secret ? await users.authenticate(secret, newId()) : undefined;
        const from = ctx.extra.request.socket.remoteAddress ?? 'unknown address';
        if (!actor) {
          // the prefix and the token's id and host, never the secret
          logger.warn(`refused graphql-ws connection from ${from}: ${await users.describeSecret(secret)}`);
          return false; // closes with 4403 Forbidden
        }
        ctx.extra.actor = actor;
        const socket = ctx.extra.socket;
        ctx.extra.unwatch = revocations.watch(actor.tokenId, () => {
          logger.warn(
            `closing graphql-ws connection from ${from}: ${actor.scope} token ${actor.tokenId}${actor.hostId ? ` (host ${actor.hostId})` : ''} was revoked`,
          );
          socket.close(4403, 'Forbidden');
          setTimeout(() => socket.terminate(), REVOKED_CLOSE_GRACE_MS).unref();
        });
        return true;
      },
      onClose: (ctx) => {
        ctx.extra.unwatch?.();
      },
      onSubscribe: async (ctx, _id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          wsActor: ctx.extra.actor ?? null,
          wsRequestId: newId(),
          wsClientAddress: ctx.extra.request.socket.remoteAddress,
        } as never);
        const document = parse(params.query);
        const args = {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
        const errors = validate(schema, document);
        return errors.length > 0 ? errors : args;
      },
    },
    wsServer,
  );
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(options.port ?? 4000, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = httpServer.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}${yoga.graphqlEndpoint}`;
  logger.info(`Gatehouse controller listening on ${url} (store: ${store.kind})`);
  let ssh: JumpServer | undefined;
  if (options.ssh) {
    const internal = new InternalLogins();
    const deps = { keys: container.resolve(SshKeyService), access: container.resolve(SshAccessService), tunnels, logger, internal };
    ssh = await startJumpServer(deps, options.ssh).catch((err: unknown) => {
      logger.error(`the SSH jump server did not start (the controller serves without it): ${(err as Error).message}`);
      return undefined;
    });
    if (ssh) {
      const terminals = container.resolve(TerminalService);
      const recordings = container.resolve(TerminalRecordingService);
      recordings.settings = options.recordings;
      terminal = new TerminalGateway(
        { terminals, access: deps.access, tunnels, logins: internal, logger, recordings },
        { jump: { host: reachableAddress(options.ssh.host ?? '127.0.0.1'), port: ssh.port, publicKey: ssh.publicKey }, ...options.terminal },
      );
      terminals.gatewayRunning = true;
    }
  }
  let metricsServer: Server | undefined;
  let metricsUrl: string | undefined;
  if (options.metricsListen) {
    // its own address, no token: for a Prometheus server on a private network; nothing else is served there
    const server = createServer((request, response) => {
      if (request.method === 'GET' && (request.url ?? '').split('?')[0] === METRICS_PATH)
        metrics.serveOpen(response).catch((err: unknown) => {
          logger.error(`/metrics: ${(err as Error).message}`);
          if (!response.headersSent) response.writeHead(500);
          response.end();
        });
      else response.writeHead(404, { 'content-type': 'text/plain' }).end(`only ${METRICS_PATH} is served here\n`);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.metricsListen!.port, options.metricsListen!.host, () => resolve());
    });
    metricsServer = server;
    const a = server.address() as AddressInfo;
    metricsUrl = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}${METRICS_PATH}`;
    logger.info(`Prometheus metrics without a token on ${metricsUrl}`);
  }
  let closed = false;
  return {
    url,
    metricsUrl,
    store,
    container,
    bootstrapSecret: bootstrap?.secret,
    bootstrapPassword: bootstrap?.password,
    ssh,
    async close() {
      if (closed) return;
      closed = true;
      await terminal?.close();
      await ssh?.close();
      tunnels.close();
      container.resolve(DiagnosisBroker).close();
      await wsHandle.dispose();
      await new Promise<void>((resolve) => wsServer.close(() => resolve()));
      // ended agent subscriptions mark their agents offline before the store goes away
      await hostAgents.settle();
      await trafficHistory.stop();
      await trafficQuota.stop();
      await metrics.stop();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer!.close(() => resolve()));
      await container.resolve(TrafficLive).stop();
      await proxyManager?.stop();
      await caddy?.stop();
      revocations.stop();
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // traffic reports taken before the server closed are written before the store goes away
      await container.resolve(TrafficIngest).stop();
      await store.close();
    },
  };
}
