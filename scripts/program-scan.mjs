// Finds every external program the repository's code and tests start, by reading the source:
// the first argument of execFile / execFileSync / spawn / spawnSync and of every wrapper around
// them (found by its signature, so a new wrapper is scanned too), the program after
// `ip netns exec NS` and `nsenter --net=…`, the defaults of `process.env.X_BIN ?? …`, and
// upper-case constants passed as the program. Programs built from templates are not seen: the
// table lists those by hand.
// scripts/test/system-requirements.test.mjs checks the result against the requirements table.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { basename, join, relative, sep } from 'node:path';

const SKIP_DIRS = new Set(['node_modules', 'dist', '.turbo', '.data', '.test-results', '.git']);
const SOURCE = /\.(?:ts|tsx|mts|cts|mjs|cjs|js)$/;
const BASE_LAUNCHERS = ['execFile', 'execFileSync', 'spawn', 'spawnSync'];
// Programs that are part of Node or of the test harness itself, not system packages.
const NOT_SYSTEM = new Set(['node', 'npm', 'npx', 'tsx']);
const IGNORE_MARKER = ['program-scan', 'ignore-file'].join(': ');

/** Source files under `root`, skipping dependencies and build output. */
export function sourceFiles(root) {
  const out = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name)) walk(join(dir, entry.name));
      } else if (SOURCE.test(entry.name) && !entry.name.endsWith('.d.ts')) {
        out.push(join(dir, entry.name));
      }
    }
  };
  walk(root);
  return out.sort();
}

/** The test suite a file belongs to: its workspace package's short name, or its top folder (bench, scripts). */
export function suiteOf(root, file) {
  const parts = relative(root, file).split(sep);
  for (let depth = parts.length - 1; depth > 0; depth--) {
    const manifest = join(root, ...parts.slice(0, depth), 'package.json');
    if (existsSync(manifest)) {
      const name = JSON.parse(readFileSync(manifest, 'utf8')).name;
      return name.replace(/^@gatehouse\//, '');
    }
  }
  return parts[0];
}

/** Names of functions whose first parameter is a program to run: `run(command: string, …)`, `exec(cmd, args)`. */
export function launcherNames(text) {
  const names = new Set();
  const patterns = [
    /(\w+)\s*(?:=\s*(?:async\s*)?)?\(\s*(?:cmd|command|bin|binary|program|tool)\s*:\s*string/g,
    /(\w+)\s*(?:=\s*(?:async\s*)?)?\(\s*(?:cmd|command)\s*,\s*(?:args|argv)\b/g,
    /(\w+)\s*(?::\s*\w+)?\s*=\s*(?:async\s*)?\(\s*(?:cmd|command)\s*,/g,
  ];
  for (const pattern of patterns) for (const m of text.matchAll(pattern)) if (m[1] !== 'function' && m[1] !== 'constructor') names.add(m[1]);
  return names;
}

const literal = String.raw`(?<q>['"])(?<p>[^'"\s$]+)\k<q>`;

/** Program names started by one file's text, given the launcher names known in the repository. */
export function programsIn(text, launchers) {
  const found = new Set();
  const add = (name) => {
    const program = basename(name);
    if (/^[a-z0-9][a-z0-9_.+-]*$/.test(program) && !NOT_SYSTEM.has(program)) found.add(program);
  };
  const calls = new RegExp(String.raw`(?<![\w$])(?:${[...launchers].join('|')})\(\s*${literal}\s*,`, 'g');
  for (const m of text.matchAll(calls)) add(m.groups.p);
  for (const m of text.matchAll(new RegExp(String.raw`['"]netns['"]\s*,\s*['"]exec['"]\s*,\s*[^,\]]+,\s*${literal}`, 'g'))) add(m.groups.p);
  for (const m of text.matchAll(/['"]nsenter['"]\s*,\s*\[\s*((?:`[^`]*`|'[^']*'|"[^"]*")\s*,\s*)*?['"]([a-z][a-z0-9_.-]*)['"]/g)) add(m[2]);
  for (const m of text.matchAll(new RegExp(String.raw`process\.env\.\w+_BIN\s*\?\?\s*${literal}`, 'g'))) add(m.groups.p);
  // a launcher called with an upper-case constant defined in the same file as a string literal
  const byConstant = new RegExp(String.raw`(?<![\w$])(?:${[...launchers].join('|')})\(\s*([A-Z][A-Z0-9_]*)\s*,`, 'g');
  for (const m of text.matchAll(byConstant)) {
    const definition = new RegExp(String.raw`const\s+${m[1]}\s*=\s*(?:process\.env\.\w+\s*\?\?\s*)?${literal}`).exec(text);
    if (definition) add(definition.groups.p);
  }
  return found;
}

/** program → the suites (packages, bench, scripts) whose files start it. */
export function scanPrograms(root) {
  // a file whose text holds the marker (the scanner's own test, with its fixtures) is not scanned
  const files = sourceFiles(root)
    .map((file) => ({ file, text: readFileSync(file, 'utf8') }))
    .filter(({ text }) => !text.includes(IGNORE_MARKER));
  const launchers = new Set(BASE_LAUNCHERS);
  for (const { text } of files) for (const name of launcherNames(text)) launchers.add(name);
  const programs = new Map();
  for (const { file, text } of files) {
    for (const program of programsIn(text, launchers)) {
      if (!programs.has(program)) programs.set(program, new Map());
      const suites = programs.get(program);
      const suite = suiteOf(root, file);
      if (!suites.has(suite)) suites.set(suite, []);
      suites.get(suite).push(relative(root, file));
    }
  }
  return { programs, launchers };
}
