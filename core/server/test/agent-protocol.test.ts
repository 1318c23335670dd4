/**
 * The agent↔controller protocol against the printed schema: every document an agent sends
 * (@gatehouse/agent-protocol) validates against `schema.graphql`, and report variables built with
 * the protocol's types are accepted by the schema's input types, so a schema change that would
 * break agents fails here.
 */
import { readFileSync } from 'node:fs';
import {
  AGENT_DOCUMENTS,
  REPORT_HOST_STATUS_MUTATION,
  REPORT_OBJECT_STATUS_MUTATION,
  STATUS_OBJECT_TYPES,
  type ReportHostStatusInput,
  type ReportObjectStatusInput,
} from '@gatehouse/agent-protocol';
import { buildSchema, parse, validate, type GraphQLSchema, type OperationDefinitionNode } from 'graphql';
import { getVariableValues } from 'graphql/execution/values.js';
import { describe, expect, it } from 'vitest';

const schema = buildSchema(readFileSync(new URL('../../../schema.graphql', import.meta.url), 'utf8'));

function coerce(schema: GraphQLSchema, document: string, variables: Record<string, unknown>) {
  const operation = parse(document).definitions[0] as OperationDefinitionNode;
  return getVariableValues(schema, operation.variableDefinitions ?? [], variables);
}

describe('agent protocol documents', () => {
  for (const [name, document] of Object.entries(AGENT_DOCUMENTS)) {
    it(`${name} validates against schema.graphql`, () => {
      expect(validate(schema, parse(document)).map((e) => e.message)).toEqual([]);
    });
  }

  it('a host report built from the protocol types, with a driver and its capabilities, is a valid ReportHostStatusInput', () => {
    const input: ReportHostStatusInput = {
      hostId: '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a01',
      appliedRevision: 3,
      error: null,
      agentVersion: '0.1.0',
      pluginId: 'lxd',
      driver: {
        id: 'lxd',
        version: '0.1.0',
        apiVersion: 1,
        capabilities: {
          portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: true, sourceAllowLists: true },
          firewall: null,
          shaping: { implementation: 'native', ingress: true, egress: false, burst: false },
          nics: { max: 4, hotplug: false, staticAddressing: true },
        },
      },
      discoveredInstances: [{ externalId: 'c1', name: 'c1', running: true, nics: [{ name: 'eth0', mac: '02:00:00:00:00:01', addresses: ['10.0.0.2/24'] }] }],
      driftDetected: false,
    };
    expect(coerce(schema, REPORT_HOST_STATUS_MUTATION, { input }).errors ?? []).toEqual([]);
  });

  it('an object report names every status object type the schema knows, NIC included', () => {
    const input: ReportObjectStatusInput = {
      hostId: '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a01',
      revision: 3,
      objects: Object.values(STATUS_OBJECT_TYPES).map((objectType, i) => ({
        objectType,
        objectId: `10000000-0000-4000-8000-00000000000${i}`,
        status: 'FAILED' as const,
        error: 'CONFLICT: taken',
      })),
    };
    expect(coerce(schema, REPORT_OBJECT_STATUS_MUTATION, { input }).errors ?? []).toEqual([]);
    expect(Object.values(STATUS_OBJECT_TYPES)).toContain('NIC');
  });
});
