/**
 * The committed schema.graphql passes graphql-schema-linter with its default rules
 * (`.graphql-schema-linterrc` at the repository root): a type, field, argument, input field or
 * enum value added without a description fails the test run.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';

const require = createRequire(import.meta.url);
// the linter's own runner, in process: the same code path as its command line
const { run } = require('graphql-schema-linter/lib/runner.js') as {
  run: (stdout: Writable, stdin: NodeJS.ReadableStream, stderr: Writable, argv: string[]) => Promise<number>;
};

const root = fileURLToPath(new URL('../../../', import.meta.url));
const schemaFile = join(root, 'schema.graphql');
const configFile = join(root, '.graphql-schema-linterrc');

interface Problem {
  message: string;
  location: { line: number; column: number };
  rule: string;
}

/** Runs the linter on one SDL file with the repository's configuration. */
async function lint(file: string): Promise<{ exitCode: number; problems: Problem[]; stderr: string }> {
  let out = '';
  let err = '';
  const sink = (append: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, done) {
        append(chunk.toString());
        done();
      },
    });
  const exitCode = await run(
    sink((s) => (out += s)),
    new PassThrough(),
    sink((s) => (err += s)),
    ['node', 'graphql-schema-linter', '--format', 'json', '--config-directory', root, file],
  );
  const problems = out ? (JSON.parse(out) as { errors: Problem[] }).errors.map(({ message, location, rule }) => ({ message, location, rule })) : [];
  return { exitCode, problems, stderr: err };
}

const scratch = mkdtempSync(join(tmpdir(), 'gatehouse-schema-lint-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

it('schema.graphql has no problems under graphql-schema-linter and the repository configuration', async () => {
  const result = await lint(schemaFile);
  expect(result.stderr).toBe('');
  expect(result.problems).toEqual([]);
  expect(result.exitCode).toBe(0);
});

it('an undocumented field and an undocumented enum value are reported by name', async () => {
  // added last, where the sorting rules are content: only the missing descriptions are wrong
  const sdl = readFileSync(schemaFile, 'utf8')
    .replace(/^(type PortForward \{[^}]*)\n\}/m, '$1\n\n  undocumentedField: Int\n}')
    .replace(/^(enum ApplyStatus \{[^}]*)\n\}/m, '$1\n\n  UNDOCUMENTED\n}');
  const file = join(scratch, 'schema.graphql');
  writeFileSync(file, sdl);
  const result = await lint(file);
  const reported = result.problems.map((p) => `${p.rule}: ${p.message}`);
  expect(reported).toContain('enum-values-have-descriptions: The enum value `ApplyStatus.UNDOCUMENTED` is missing a description.');
  expect(reported).toContain('fields-have-descriptions: The field `PortForward.undocumentedField` is missing a description.');
  expect(result.exitCode).toBe(1);
});

it('the configuration runs every built-in rule of the linter, or names the reason it switches one off', () => {
  const builtIn = readdirSync(join(require.resolve('graphql-schema-linter/package.json'), '..', 'lib', 'rules'))
    .filter((f) => f.endsWith('.js'))
    .map((f) => f.slice(0, -3).replaceAll('_', '-'))
    .sort();
  const config = readFileSync(configFile, 'utf8');
  const listed = [...config.matchAll(/^\s*-\s*([a-z-]+)\s*$/gm)].map((m) => m[1]!);
  const switchedOff = [...config.matchAll(/^\s*#\s*switched off:\s*([a-z-]+):\s*\S.*$/gm)].map((m) => m[1]!);
  expect([...listed, ...switchedOff].sort()).toEqual(builtIn);
});
