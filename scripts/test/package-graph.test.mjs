// The package manifests say what DESIGN.md's package graph says, and dependencies point one way:
//
//   web ──► schema.graphql only
//   cli ──► server, host-agent, plugins/*   (the composition root; nothing depends on it)
//   server ──► sdk, agent protocol, caddy-api-client   (never host-agent or plugins)
//   host-agent ──► sdk, agent protocol      (plugins are loaded by name at run time)
//   plugins/* ──► sdk, dataplane
//   dataplane ──► sdk
//   agent-protocol ──► sdk
//
// The test prints the graph it read, as the closing note of issue 18 shows it.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../..', import.meta.url).pathname;

/** Each workspace package: its folder, name, short name and workspace dependencies (runtime and dev). */
function workspacePackages() {
  const patterns = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).workspaces;
  const dirs = patterns.flatMap((pattern) => {
    if (!pattern.endsWith('/*')) return [join(root, pattern)];
    const parent = join(root, pattern.slice(0, -2));
    return readdirSync(parent, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => join(parent, d.name));
  });
  const manifests = dirs
    .filter((dir) => existsSync(join(dir, 'package.json')))
    .map((dir) => ({ dir, json: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) }));
  const names = new Set(manifests.map((m) => m.json.name));
  const inWorkspace = (deps) =>
    Object.keys(deps ?? {})
      .filter((name) => names.has(name))
      .map(shortName)
      .sort();
  return manifests.map(({ dir, json }) => ({
    dir: relative(root, dir),
    name: json.name,
    short: shortName(json.name),
    dependencies: inWorkspace(json.dependencies),
    devDependencies: inWorkspace(json.devDependencies),
  }));
}

/** `@gatehouse/plugin-lxd` → plugin-lxd, `caddy-api-client` as is. */
function shortName(name) {
  return name.replace(/^@gatehouse\//, '');
}

/** The role a package plays in the graph: plugin-* share one. */
function role(short) {
  return short.startsWith('plugin-') ? 'plugin-*' : short;
}

/** Which roles each role may depend on at run time. */
const RUNTIME = {
  web: [],
  // the sandbox loads the linux plugin through the SDK's loader, as the agent does
  cli: ['server', 'host-agent', 'plugin-*', 'sdk'],
  server: ['sdk', 'agent-protocol', 'caddy-api-client'],
  'host-agent': ['sdk', 'agent-protocol'],
  'plugin-*': ['sdk', 'dataplane'],
  dataplane: ['sdk'],
  'agent-protocol': ['sdk'],
  sdk: [],
  'caddy-api-client': [],
};

/** What tests may use on top (devDependencies): test kits of packages further down, never a package above. */
const TESTS_ONLY = {
  // the agent's end-to-end tests drive real plugins and their labs
  'host-agent': ['plugin-*'],
  // the CLI's process tests run a Caddy from caddy-api-client/testing
  cli: ['caddy-api-client'],
};

const packages = workspacePackages();

/** Dependency edges that the graph does not allow, as `from → to (field)`. */
function forbiddenEdges() {
  const wrong = [];
  for (const p of packages) {
    const allowed = RUNTIME[role(p.short)];
    if (!allowed) {
      wrong.push(`${p.name} (${p.dir}) has no place in the graph: add its role to RUNTIME`);
      continue;
    }
    for (const dep of p.dependencies) if (!allowed.includes(role(dep))) wrong.push(`${p.short} → ${dep} (dependencies)`);
    const forTests = [...allowed, ...(TESTS_ONLY[role(p.short)] ?? [])];
    for (const dep of p.devDependencies) if (!forTests.includes(role(dep))) wrong.push(`${p.short} → ${dep} (devDependencies)`);
  }
  return wrong;
}

/** A circle among the packages (all dependency fields), or undefined. */
function circle() {
  const edges = new Map(packages.map((p) => [p.short, [...p.dependencies, ...p.devDependencies]]));
  const state = new Map();
  const path = [];
  const visit = (node) => {
    state.set(node, 'open');
    path.push(node);
    for (const to of edges.get(node) ?? []) {
      if (state.get(to) === 'open') return [...path.slice(path.indexOf(to)), to];
      if (!state.has(to)) {
        const found = visit(to);
        if (found) return found;
      }
    }
    path.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const p of packages)
    if (!state.has(p.short)) {
      const found = visit(p.short);
      if (found) return found;
    }
  return undefined;
}

describe('the package graph', () => {
  it('prints what the manifests say', () => {
    const width = Math.max(...packages.map((p) => p.short.length));
    const lines = [...packages]
      .sort((a, b) => a.dir.localeCompare(b.dir))
      .map((p) => {
        const dev = p.devDependencies.length ? `   (tests: ${p.devDependencies.join(', ')})` : '';
        return `  ${p.short.padEnd(width)} ──► ${p.dependencies.join(', ') || '(none)'}${dev}`;
      });
    console.log(`package graph (workspace dependencies from each package.json):\n${lines.join('\n')}`);
    expect(packages.map((p) => p.short)).toEqual(expect.arrayContaining(['cli', 'server', 'host-agent', 'sdk', 'dataplane', 'plugin-linux']));
  });

  it("is DESIGN.md's one-way graph: every dependency is one its role allows", () => {
    expect(forbiddenEdges()).toEqual([]);
  });

  it('keeps the controller free of the agent and the plugins, even in its tests', () => {
    const server = packages.find((p) => p.short === 'server');
    expect([...server.dependencies, ...server.devDependencies].filter((d) => d === 'host-agent' || d.startsWith('plugin-'))).toEqual([]);
  });

  it('has no circle, and nothing depends on the composition root', () => {
    expect(circle()).toBeUndefined();
    expect(packages.filter((p) => [...p.dependencies, ...p.devDependencies].includes('cli')).map((p) => p.short)).toEqual([]);
  });
});
