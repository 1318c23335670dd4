/**
 * GraphiQL opens with the README's walkthrough as tabs, and a new user can run them in order
 * against a fresh controller: each succeeds once the ids its variables name are filled in.
 */
import { parse, validate } from 'graphql';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GRAPHIQL_EXAMPLES } from '../src/graphql/graphiql-examples.js';
import { gatehouseSchema } from '../src/graphql/schema.js';
import { startController, type Controller } from '../src/server.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';

let controller: Controller;
let api: TestApi;

beforeAll(async () => {
  controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
  api = await createTestApi(controller.store, controller.container);
});
afterAll(async () => {
  await controller?.close();
});

it('the GraphiQL page carries every example tab', async () => {
  const page = await fetch(controller.url, { headers: { accept: 'text/html' } });
  expect(page.status).toBe(200);
  const html = await page.text();
  for (const tab of GRAPHIQL_EXAMPLES) {
    const name = /^(?:query|mutation) (\w+)/m.exec(tab.query)?.[1];
    expect(name, tab.query.split('\n')[0]).toBeDefined();
    expect(html).toContain(`${/^(query|mutation)/m.exec(tab.query)![1]} ${name}`);
  }
});

it('every example is a valid operation of the schema', () => {
  for (const tab of GRAPHIQL_EXAMPLES) expect(validate(gatehouseSchema(), parse(tab.query)).map((e) => e.message)).toEqual([]);
});

it('run in order, each example succeeds, with the ids earlier ones returned', async () => {
  const ids: Record<string, string> = {};
  const answers: Record<string, unknown>[] = [];
  for (const [i, tab] of GRAPHIQL_EXAMPLES.entries()) {
    // what a user pastes: each "<… from tab n>" placeholder replaced by that id
    const variables = Object.fromEntries(
      Object.entries(JSON.parse(tab.variables ?? '{}') as Record<string, string>).map(([key, placeholder]) => {
        expect(placeholder).toMatch(/^<.+ from tab \d>$/);
        expect(ids[key], `tab ${i + 1} needs ${key}`).toBeDefined();
        return [key, ids[key]];
      }),
    );
    const r = await api.admin(tab.query, variables);
    expect(r.errors, `tab ${i + 1}`).toBeUndefined();
    const data = r.data as Record<string, Record<string, unknown>>;
    // a mutation answers its payload, not one of its errors
    for (const result of Object.values(data)) expect(result, `tab ${i + 1}`).not.toHaveProperty('code');
    answers.push(data);
    if (data.createHost) ids.hostId = (data.createHost.host as { id: string }).id;
    if (data.createInstance) ids.instanceId = (data.createInstance.instance as { id: string }).id;
  }
  expect(answers[0]).toEqual({ me: { name: 'admin', role: 'ADMIN' } });
  expect(answers[3]).toMatchObject({ createInstance: { instance: { nics: [{ name: 'eth0', addresses: [{ cidr: '10.0.0.1/24', gateway: '10.0.0.254' }] }] } } });
  expect(answers[6]).toMatchObject({
    createPortForward: { portForward: { hostPorts: { start: 10022, end: 10022 }, targetAddress: '10.0.0.1', status: 'PENDING' } },
  });
  expect(answers[8]).toMatchObject({
    addFirewallRule: {
      rule: {
        ports: [
          { start: 22, end: 22 },
          { start: 80, end: 80 },
          { start: 443, end: 443 },
          { start: 8000, end: 9000 },
        ],
        priority: 1000,
      },
    },
  });
});
