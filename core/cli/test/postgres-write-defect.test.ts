/**
 * postgres.js 3.4.x's uncaught write on a closed connection (porsager/postgres#1154), made by the
 * driver's own connection code in a real process (test/support/postgres-write-defect.mjs, on
 * SIGUSR2): it ends a bare Node process; a controller on PostgreSQL logs it and keeps serving.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPostgresWriteDefect } from '@gatehouse/server';
import { REQUIRE_SYSTEM, createTestDatabase, post, postgresReachable, type TestDatabase } from '@gatehouse/server/testing';
import { killController, spawnController, type ControllerProcess } from './support/processes.js';

const PRELOAD = fileURLToPath(new URL('./support/postgres-write-defect.mjs', import.meta.url));
const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));
const available = await postgresReachable();

describe('the postgres.js write defect', () => {
  it('ends a Node process without the guard: an uncaught TypeError from nextWrite in postgres.js', async () => {
    const child = spawn(process.execPath, ['--import', PRELOAD, '-e', 'setTimeout(() => {}, 20000)'], { cwd: CLI_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => setTimeout(r, 1000));
    child.kill('SIGUSR2');
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(1);
    expect(out).toMatch(
      /TypeError: Cannot read properties of null \(reading 'write'\)\n\s+at Immediate\.nextWrite \(\S+postgres\/src\/connection\.js:\d+:\d+\)/,
    );
  });

  it('is recognised exactly: the message and nextWrite of postgres.js on top, nothing else', () => {
    const defect = new TypeError("Cannot read properties of null (reading 'write')");
    defect.stack = `${defect.name}: ${defect.message}\n    at Immediate.nextWrite (file:///app/node_modules/postgres/src/connection.js:255:22)\n    at process.processImmediate (node:internal/timers:483:21)`;
    expect(isPostgresWriteDefect(defect)).toBe(true);
    const elsewhere = new TypeError(defect.message);
    elsewhere.stack = `${defect.name}: ${defect.message}\n    at nextWrite (file:///app/src/mine.js:1:1)`;
    expect(isPostgresWriteDefect(elsewhere)).toBe(false);
    const other = new TypeError("Cannot read properties of null (reading 'end')");
    other.stack = defect.stack.replace("'write'", "'end'");
    expect(isPostgresWriteDefect(other)).toBe(false);
    expect(isPostgresWriteDefect(new Error(defect.message))).toBe(false);
  });
});

describe.skipIf(!available && !REQUIRE_SYSTEM)('a controller on PostgreSQL meeting the postgres.js write defect', () => {
  let database: TestDatabase;
  let controller: ControllerProcess | undefined;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    if (controller) await killController(controller);
    await database?.drop();
  });

  it('logs it and keeps serving', async () => {
    controller = await spawnController(['--database-url', database.url], { NODE_OPTIONS: `--import ${PRELOAD}` });
    let secret = '';
    for (const end = Date.now() + 30_000; !secret && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
      secret = /keep it:\s+(gh_\S+)\n/.exec(controller.output())?.[1] ?? '';
    controller.child.kill('SIGUSR2');
    for (const end = Date.now() + 10_000; !/porsager\/postgres#1154, seen 1 time/.test(controller.output()) && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 50));
    expect(controller.output()).toMatch(/postgres\.js wrote to a database connection that had already closed \(porsager\/postgres#1154, seen 1 time\(s\)\)/);
    await new Promise((r) => setTimeout(r, 200));
    expect(controller.child.exitCode).toBeNull();
    const r = await post(controller.url, secret, 'mutation { createHost(input: { name: "after-defect", backend: LINUX }) { __typename } }');
    expect(r.body.data.createHost.__typename).toBe('CreateHostPayload');
  });
});
