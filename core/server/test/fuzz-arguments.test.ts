/**
 * Every query, mutation and subscription field of the printed schema, driven with generated
 * arguments: each `ID` argument or input field (at any depth) with malformed ids, and each string
 * with control characters. No answer may be an internal error; a mutation answers its payload or
 * a typed error naming an input path; a refused id changes nothing. The fields are read from the
 * schema, so a field added later is fuzzed too.
 */
import fc from 'fast-check';
import {
  getNamedType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
  isUnionType,
  type GraphQLField,
  type GraphQLInputType,
} from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../src/db/database.js';
import { gatehouseSchema } from '../src/graphql/schema.js';
import { startController, type Controller } from '../src/server.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';

const schema = gatehouseSchema();
const UUID = '0190f3a2-6b1c-7d4e-8f00-1a2b3c4d5e6f';

/** Malformed ids: not UUIDs, UUID look-alikes, NUL, control characters, a long string. */
const badId = fc.oneof(
  fc.string({ maxLength: 40 }).filter((s) => !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)),
  fc.constantFrom(
    'not-a-uuid',
    '',
    ' ',
    '\u0000',
    `${UUID}\u0000`,
    ` ${UUID}`,
    `${UUID}0`,
    UUID.replace(/-/g, ''),
    "' or 1=1 --",
    'x'.repeat(5000),
    '٣'.repeat(36),
  ),
);
/** Strings with control characters. */
const controlText = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 12 }),
  fc.constantFrom('a\u0000b', '\u0000', '\u007f', 'x\r\ny', '\u001b[31m', 'name\u0000'),
);

type Operation = 'query' | 'mutation' | 'subscription';
interface Target {
  operation: Operation;
  field: GraphQLField<unknown, unknown>;
}

/** A path to a leaf of a given named type inside a field's arguments. */
interface Slot {
  path: (string | number)[];
  typeName: string;
}

/** Every ID or String leaf reachable from the arguments (lists: their first item). */
function slotsOf(field: GraphQLField<unknown, unknown>): Slot[] {
  const out: Slot[] = [];
  const walk = (type: GraphQLInputType, path: (string | number)[], seen: Set<string>) => {
    if (isNonNullType(type)) return walk(type.ofType, path, seen);
    if (isListType(type)) return walk(type.ofType as GraphQLInputType, [...path, 0], seen);
    if (isScalarType(type) && (type.name === 'ID' || type.name === 'String')) out.push({ path, typeName: type.name });
    if (isInputObjectType(type) && !seen.has(type.name)) {
      for (const f of Object.values(type.getFields())) walk(f.type, [...path, f.name], new Set([...seen, type.name]));
    }
  };
  for (const arg of field.args) walk(arg.type, [arg.name], new Set());
  return out;
}

function setAt(value: Record<string, unknown>, path: (string | number)[], leaf: unknown): Record<string, unknown> {
  const root = structuredClone(value);
  let node: any = root;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    if (node[key] === undefined || node[key] === null) node[key] = typeof path[i + 1] === 'number' ? [] : {};
    node = node[key];
  }
  node[path.at(-1)!] = leaf;
  return root;
}

/** The GraphQL type of a variable for an argument, as written in the operation. */
function typeText(type: GraphQLInputType): string {
  return type.toString();
}

/** A selection that works on any output type. */
function selectionOf(field: GraphQLField<unknown, unknown>): string {
  const named = getNamedType(field.type);
  if (isScalarType(named) || isEnumType(named)) return '';
  if (isUnionType(named)) return '{ __typename ... on Error { code field } }';
  if (isObjectType(named)) return '{ __typename }';
  return '{ __typename }';
}

const targets: Target[] = [
  ...Object.values(schema.getQueryType()!.getFields()).map((field) => ({ operation: 'query' as const, field })),
  ...Object.values(schema.getMutationType()!.getFields()).map((field) => ({ operation: 'mutation' as const, field })),
  ...Object.values(schema.getSubscriptionType()!.getFields()).map((field) => ({ operation: 'subscription' as const, field })),
].filter((t) => t.field.args.length > 0);

describe('fuzzing every field of the schema', () => {
  let store: Store;
  let api: TestApi;
  let controller: Controller;
  let fillers: Record<string, unknown>;

  /** Plausible values for the required arguments: real objects where the name says which. */
  function filler(type: GraphQLInputType, name: string, seen = new Set<string>()): unknown {
    if (isNonNullType(type)) return filler(type.ofType, name, seen);
    if (isListType(type)) return [filler(type.ofType as GraphQLInputType, name, seen)];
    if (isEnumType(type)) return type.getValues()[0]!.name;
    if (isInputObjectType(type)) {
      const out: Record<string, unknown> = {};
      // required fields, and optional nested inputs (so that every leaf below has a parent to sit in)
      for (const f of Object.values(type.getFields())) {
        const nested = isInputObjectType(getNamedType(f.type));
        if (((isNonNullType(f.type) && f.defaultValue === undefined) || nested) && !seen.has(type.name))
          out[f.name] = filler(f.type, f.name, new Set([...seen, type.name]));
      }
      return out;
    }
    if (isScalarType(type)) {
      if (type.name === 'ID') return fillers[name] ?? UUID;
      if (type.name === 'Int') return 1;
      if (type.name === 'Float') return 1;
      if (type.name === 'Boolean') return false;
      if (type.name === 'BigInt') return '1';
      if (type.name === 'DateTime') return new Date(0).toISOString();
      if (type.name === 'JSON') return {};
      return fillers[name] ?? 'fuzz';
    }
    return null;
  }

  function baseArgs(field: GraphQLField<unknown, unknown>): Record<string, unknown> {
    const args: Record<string, unknown> = {};
    for (const arg of field.args) if (isNonNullType(arg.type) || isInputObjectType(getNamedType(arg.type))) args[arg.name] = filler(arg.type, arg.name);
    return args;
  }

  function document(t: Target): string {
    const vars = t.field.args.map((a) => `$${a.name}: ${typeText(a.type)}`).join(', ');
    const call = t.field.args.map((a) => `${a.name}: $${a.name}`).join(', ');
    return `${t.operation} Fuzz(${vars}) { ${t.field.name}(${call}) ${selectionOf(t.field)} }`;
  }

  /**
   * Runs one generated call; returns the errors and the field's result. A subscription that sends
   * nothing within `quietMs` counts as accepted; calls that must be refused wait longer, so a slow
   * connection setup on a loaded machine is not taken for an acceptance.
   */
  async function call(t: Target, variables: Record<string, unknown>, quietMs = 300): Promise<{ errors: any[]; result: any }> {
    if (t.operation !== 'subscription') {
      const r = await api.admin(document(t), variables);
      return { errors: r.errors ?? [], result: r.data?.[t.field.name] };
    }
    // subscriptions over graphql-ws, as the UI and agents use them; the first event or error ends it
    const client = createClient({
      url: controller.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { Authorization: `Bearer ${api.adminSecret}` },
      retryAttempts: 0,
    });
    try {
      return await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ errors: [], result: undefined }), quietMs);
        client.subscribe(
          { query: document(t), variables },
          {
            next: (r: any) => (clearTimeout(timer), resolve({ errors: r.errors ?? [], result: r.data?.[t.field.name] })),
            error: (e: any) => (clearTimeout(timer), resolve({ errors: Array.isArray(e) ? e : [e], result: undefined })),
            complete: () => {},
          },
        );
      });
    } finally {
      await client.dispose();
    }
  }

  function expectNoInternalError(t: Target, outcome: { errors: any[]; result: any }, what: string) {
    for (const e of outcome.errors) {
      expect(e.extensions?.code, `${t.operation} ${t.field.name} with ${what}: ${e.message}`).not.toBe('INTERNAL_SERVER_ERROR');
      expect(e.message, `${t.field.name}`).not.toMatch(/Unexpected error|Failed query/);
    }
    if (t.operation === 'mutation' && outcome.result?.code === 'VALIDATION_FAILED') {
      expect(outcome.result.field, `${t.field.name}: a typed error names an input path`).toBeTruthy();
    }
  }

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
    store = controller.store;
    api = await createTestApi(store, controller.container);
    const hostId = await createHost(api.admin, 'fz-host');
    const poolId = await createPool(api.admin, { name: 'fz', kind: 'PRIVATE', network: 'br-fz', cidr: '10.31.0.0/24' });
    const [nicId] = await createNics(api.admin, hostId, undefined, 'fz-vm', 'br-fz', 1);
    const instanceId = (await api.admin(`{ instances { edges { node { id } } } }`)).data!.instances.edges[0].node.id;
    const tenant = await api.tenant('fz-tenant');
    fillers = { hostId, poolId, nicId, instanceId, id: instanceId, userId: tenant.id };
  });
  afterAll(async () => controller?.close());

  it(`covers the fields with ID arguments (${targets.filter((t) => slotsOf(t.field).some((s) => s.typeName === 'ID')).length})`, () => {
    const names = targets.filter((t) => slotsOf(t.field).some((s) => s.typeName === 'ID')).map((t) => t.field.name);
    for (const name of [
      'instance',
      'portForward',
      'webProxy',
      'host',
      'ipPool',
      'user',
      'instances',
      'portForwards',
      'reportObjectStatus',
      'hostDesiredStateChanges',
    ]) {
      expect(names).toContain(name);
    }
  });

  it('answers a malformed id in every ID argument with a typed refusal naming it, and changes nothing', async () => {
    for (const t of targets) {
      const idSlots = slotsOf(t.field).filter((s) => s.typeName === 'ID');
      if (idSlots.length === 0) continue;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...idSlots), badId, async (slot, value) => {
          const before = await api.snapshot();
          const outcome = await call(t, setAt(baseArgs(t.field), slot.path, value), 5_000);
          expectNoInternalError(t, outcome, `${slot.path.join('.')} = ${JSON.stringify(value).slice(0, 60)}`);
          const refusal = outcome.errors[0]?.extensions ?? outcome.result;
          expect(refusal?.code, `${t.field.name} ${slot.path.join('.')}=${JSON.stringify(value).slice(0, 40)}`).toBe('VALIDATION_FAILED');
          expect(String(refusal?.field)).toBe(slot.path.join('.').replace(/\.(\d+)(?=\.|$)/g, '[$1]'));
          expect(await api.snapshot()).toEqual(before);
        }),
        { numRuns: 8 },
      );
    }
  }, 120_000);

  it('treats an upper-case id like its lower-case form', async () => {
    const id = fillers.instanceId as string;
    const lower = await api.admin(`query($id: ID!) { instance(id: $id) { id name } }`, { id });
    const upper = await api.admin(`query($id: ID!) { instance(id: $id) { id name } }`, { id: id.toUpperCase() });
    expect(upper).toEqual(lower);
    expect(lower.data.instance.id).toBe(id);
    const none = await api.admin(`mutation($input: DeletePortForwardInput!) { deletePortForward(input: $input) { __typename ... on Error { code field } } }`, {
      input: { portForwardId: UUID.toUpperCase() },
    });
    expect(none.data.deletePortForward).toEqual({ __typename: 'NotFoundError', code: 'NOT_FOUND', field: 'input.portForwardId' });
  });

  it('never answers control characters in a string argument with an internal error', async () => {
    for (const t of targets) {
      const textSlots = slotsOf(t.field).filter((s) => s.typeName === 'String');
      if (textSlots.length === 0) continue;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...textSlots), controlText, async (slot, value) => {
          const outcome = await call(t, setAt(baseArgs(t.field), slot.path, value));
          expectNoInternalError(t, outcome, `${slot.path.join('.')} = ${JSON.stringify(value)}`);
          if (value.includes('\u0000')) {
            const refusal = outcome.errors[0]?.extensions ?? outcome.result;
            expect(refusal?.code, `${t.field.name} ${slot.path.join('.')}`).toBe('VALIDATION_FAILED');
          }
        }),
        { numRuns: 8 },
      );
    }
  }, 120_000);
});
