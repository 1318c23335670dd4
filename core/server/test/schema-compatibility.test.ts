/**
 * Deprecate before removing: schema.graphql makes no breaking change against the schema of the
 * last release (`core/server/schema-baseline.graphql`), except removing what that release
 * already marked `@deprecated`. Checked with @graphql-inspector/core's diff.
 */
import { CriticalityLevel, DiffRule, diff } from '@graphql-inspector/core';
import { buildSchema, parse, print, visit, type ObjectTypeDefinitionNode } from 'graphql';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const read = (path: string) => readFileSync(fileURLToPath(new URL(path, import.meta.url)), 'utf8');
const released = read('../schema-baseline.graphql');
const current = read('../../../schema.graphql');

/** The breaking changes from one SDL to another, as "path: message". */
async function breakingChanges(before: string, after: string): Promise<string[]> {
  // removing a field, input field or enum value the old schema deprecated is DANGEROUS, not BREAKING
  const changes = await diff(buildSchema(before), buildSchema(after), [DiffRule.suppressRemovalOfDeprecatedField]);
  return changes.filter((c) => c.criticality.level === CriticalityLevel.Breaking).map((c) => `${c.path ?? ''}: ${c.message}`);
}

it('schema.graphql breaks nothing the last release offered (update the baseline only when releasing)', async () => {
  expect(await breakingChanges(released, current)).toEqual([]);
});

/** The SDL with one field of one object type replaced by `replacement` (SDL of a field), or removed. */
function withField(sdl: string, typeName: string, fieldName: string, replacement: string | null): string {
  const [field] = replacement === null ? [] : (parse(`type T { ${replacement} }`).definitions[0] as ObjectTypeDefinitionNode).fields!;
  const edited = visit(parse(sdl), {
    ObjectTypeDefinition(node) {
      if (node.name.value !== typeName) return undefined;
      expect(node.fields!.some((f) => f.name.value === fieldName)).toBe(true);
      return { ...node, fields: node.fields!.flatMap((f) => (f.name.value !== fieldName ? [f] : field ? [field] : [])) };
    },
  });
  return print(edited);
}

it('removing a field, or changing its type, is reported as breaking', async () => {
  expect(await breakingChanges(released, withField(released, 'PortForward', 'note', null))).toEqual([
    "PortForward.note: Field 'note' was removed from object type 'PortForward'",
  ]);
  expect(await breakingChanges(released, withField(released, 'PortForward', 'targetAddress', 'targetAddress: Int!'))).toEqual([
    "PortForward.targetAddress: Field 'PortForward.targetAddress' changed type from 'String!' to 'Int!'",
  ]);
});

it('removing a field the last release deprecated is not breaking', async () => {
  const deprecated = withField(released, 'PortForward', 'note', 'note: String! @deprecated(reason: "Use PortForward.description.")');
  expect(await breakingChanges(released, deprecated)).toEqual([]);
  expect(await breakingChanges(deprecated, withField(deprecated, 'PortForward', 'note', null))).toEqual([]);
});
