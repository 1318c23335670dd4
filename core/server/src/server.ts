/**
 * The controller process: store, DI container, GraphQL over HTTP (yoga, with GraphiQL) and over
 * WebSocket (graphql-ws) on the same port and path.
 */
import 'reflect-metadata';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GraphQLError } from 'graphql';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { useServer } from 'graphql-ws/use/ws';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { WebSocketServer } from 'ws';
import type { Actor } from './auth/actor.js';
import { GatehouseError } from './errors.js';
import { openStore, type Store, type StoreConfig } from './db/database.js';
import { createEventBus } from './events.js';
import { createLoaders, resolveServices, type GraphQLContext } from './graphql/context.js';
import { gatehouseSchema } from './graphql/schema.js';
import { newId } from './ids.js';
import { MAX_CSV_BYTES } from './services/port-forward-import-service.js';
import { UserService } from './services/user-service.js';
import { DatabaseToken, EventBusToken } from './tokens.js';

/** Minimal logger interface (console satisfies it). */
export interface Logger {
  info(message: string, ...rest: unknown[]): void;
  warn(message: string, ...rest: unknown[]): void;
  error(message: string, ...rest: unknown[]): void;
}

/** Options of `startController`. */
export interface ControllerOptions {
  store: StoreConfig;
  port?: number;
  host?: string;
  logger?: Logger;
  /** Create the first admin and its token on an empty store (default true). */
  bootstrap?: boolean;
}

/** A running controller. */
export interface Controller {
  readonly url: string;
  readonly store: Store;
  readonly container: DependencyContainer;
  /** The first admin token's secret, when this start created it. */
  readonly bootstrapSecret?: string;
  close(): Promise<void>;
}

/** Builds the DI container for an open store. */
export function createContainer(store: Store): DependencyContainer {
  const child = rootContainer.createChildContainer();
  child.registerInstance(DatabaseToken, store.db);
  child.registerInstance(EventBusToken, createEventBus(store.eventTarget));
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

const GRAPHIQL_DEFAULT_QUERY = `# Gatehouse GraphiQL. Add your token under Headers below:
#   {"Authorization": "Bearer gh_..."}
# The README walks through creating a pool, a host and an instance.
query Me {
  me { name role }
}
`;

const quietLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} };

/** Creates the yoga instance for a container (exported for in-process tests). */
export function createGatehouseYoga(
  container: DependencyContainer,
  logger: Logger = quietLogger,
): YogaServerInstance<{ wsActor?: Actor | null; wsRequestId?: string }, GraphQLContext> {
  const services = resolveServices(container);
  const users = container.resolve(UserService);
  return createYoga<{ wsActor?: Actor | null; wsRequestId?: string }, GraphQLContext>({
    schema: gatehouseSchema(),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // twice the largest CSV import: bigger bodies are refused with 413 before they are parsed
    maxRequestBodySize: MAX_REQUEST_BYTES,
    // GraphiQL with its assets inlined: it works without internet access
    renderGraphiQL,
    graphiql: { title: 'Gatehouse GraphiQL', defaultQuery: GRAPHIQL_DEFAULT_QUERY },
    logging: false,
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
        // validation, authentication and limit errors raised as GraphQL errors pass unmasked
        if (isGraphQLError(error) && (original === undefined || original === null || isGraphQLError(original))) return error as Error;
        logger.error('unexpected error in resolver', original ?? error);
        return new GraphQLError(message, { extensions: { code: 'INTERNAL_SERVER_ERROR' } });
      },
    },
    context: async (initial): Promise<GraphQLContext> => {
      let actor: Actor | null;
      let requestId: string;
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
      return { actor, requestId, services, loaders: createLoaders(services) };
    },
  });
}

/** Opens the store, migrates it, and serves GraphQL on HTTP and WebSocket. */
export async function startController(options: ControllerOptions): Promise<Controller> {
  const logger = options.logger ?? quietLogger;
  const store = await openStore(options.store);
  const container = createContainer(store);
  let bootstrapSecret: string | undefined;
  if (options.bootstrap !== false) {
    bootstrapSecret = (await container.resolve(UserService).bootstrapAdmin())?.secret;
  }
  const yoga = createGatehouseYoga(container, logger);
  const users = container.resolve(UserService);
  const httpServer: Server = createServer(yoga);
  const wsServer = new WebSocketServer({ server: httpServer, path: yoga.graphqlEndpoint });
  const wsHandle = useServer<Record<string, unknown>, { actor?: Actor; request: IncomingMessage }>(
    {
      execute: (args) => (args.rootValue as { execute: (a: unknown) => unknown }).execute(args) as never,
      subscribe: (args) => (args.rootValue as { subscribe: (a: unknown) => unknown }).subscribe(args) as never,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const secret = bearerOf(params.Authorization ?? params.authorization);
        const actor = secret ? await users.authenticate(secret, newId()) : undefined;
        if (!actor) return false; // closes with 4403 Forbidden
        ctx.extra.actor = actor;
        return true;
      },
      onSubscribe: async (ctx, _id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          wsActor: ctx.extra.actor ?? null,
          wsRequestId: newId(),
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
  let closed = false;
  return {
    url,
    store,
    container,
    bootstrapSecret,
    async close() {
      if (closed) return;
      closed = true;
      await wsHandle.dispose();
      await new Promise<void>((resolve) => wsServer.close(() => resolve()));
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await store.close();
    },
  };
}
