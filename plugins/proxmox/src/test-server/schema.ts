/**
 * The Proxmox VE API schema (pve-docs' `apidata.js`, as `paths[path][METHOD]`) and a validator of
 * requests against it, as PVE's JSONSchema checks parameters before a handler runs: unknown
 * parameters (`additionalProperties: 0`), missing required ones, types (integer, number, boolean
 * as PVE parses them), `enum`, `pattern` (anchored, Perl `(?^:…)` groups read as JS), `minimum` /
 * `maximum`, `minLength` / `maxLength`, the named formats the plugin's paths use (`pve-node`,
 * `pve-vmid`, `mac-addr`, `pve-bridge-id`, `pve-configid-list`, `pve-tag-list`, addresses and
 * CIDRs) and property-string formats (`netN`'s sub-keys, default keys and key aliases). Named
 * formats not listed here are not checked. Messages follow PVE's wording.
 */
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parsePropertyString, type KeyAlias } from '../property-string.js';

/** One parameter's (or sub-key's) schema. */
export interface ParamSchema {
  type?: string;
  optional?: number;
  enum?: string[];
  pattern?: string;
  format?: string | Record<string, ParamSchema>;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  default_key?: number;
  alias?: string;
  keyAlias?: string;
}

/** One method of one path. */
export interface MethodSchema {
  parameters?: { properties?: Record<string, ParamSchema>; additionalProperties?: number };
  permissions?: { check?: unknown[]; user?: string };
  returns?: unknown;
}

/** The schema file: `{ source, paths: { [path]: { [METHOD]: MethodSchema } } }`. */
export interface PveSchemaFile {
  source?: string;
  paths: Record<string, Record<string, MethodSchema>>;
}

/** The file name of the schema, searched in `shared/reference/` of this directory's ancestors. */
export const SCHEMA_FILE = 'proxmox-ve-9.1-api-schema.json';

/** Finds the schema: GATEHOUSE_PVE_SCHEMA, else `shared/reference/<SCHEMA_FILE>` in an ancestor directory. */
export function findSchemaFile(): string {
  if (process.env.GATEHOUSE_PVE_SCHEMA) return process.env.GATEHOUSE_PVE_SCHEMA;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'shared', 'reference', SCHEMA_FILE);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`${SCHEMA_FILE} not found in shared/reference/ of any parent directory; set GATEHOUSE_PVE_SCHEMA`);
  }
}

const NAMED_FORMATS: Record<string, (v: string) => boolean> = {
  'pve-node': (v) => /^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/.test(v),
  'pve-vmid': (v) => /^\d+$/.test(v),
  'mac-addr': (v) => /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(v) && (parseInt(v.slice(0, 2), 16) & 1) === 0,
  'pve-bridge-id': (v) => /^[-_.\w\d]+$/.test(v),
  'pve-iface': (v) => /^[a-zA-Z][a-zA-Z0-9_.-]{0,19}$/.test(v),
  'pve-configid': (v) => /^[a-z][a-z0-9_]+$/i.test(v),
  'pve-configid-list': (v) =>
    v
      .split(/[,;\s]+/)
      .filter(Boolean)
      .every((k) => /^[a-z][a-z0-9_]*$/i.test(k)),
  'pve-tag-list': (v) =>
    v
      .split(/[,;\s]+/)
      .filter(Boolean)
      .every((t) => /^[a-z0-9_][a-z0-9_\-+.]*$/i.test(t)),
  ipv4: (v) => isIP(v) === 4,
  ipv6: (v) => isIP(v) === 6,
  ip: (v) => isIP(v) !== 0,
  CIDR: (v) => cidr(v, 0),
  CIDRv4: (v) => cidr(v, 4),
  CIDRv6: (v) => cidr(v, 6),
  IPorCIDR: (v) => isIP(v) !== 0 || cidr(v, 0),
  'pve-ipv4-config': (v) => v === 'dhcp' || v === 'manual' || cidr(v, 4),
  'pve-ipv6-config': (v) => v === 'dhcp' || v === 'manual' || v === 'auto' || cidr(v, 6),
};

function cidr(v: string, family: 0 | 4 | 6): boolean {
  const [address, prefix, extra] = v.split('/');
  if (extra !== undefined || prefix === undefined || !/^\d{1,3}$/.test(prefix)) return false;
  const f = isIP(address ?? '');
  return f !== 0 && (family === 0 || f === family) && Number(prefix) <= (f === 4 ? 32 : 128);
}

/** A Perl pattern from the schema as an anchored JS regex. */
function patternRegex(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern.replace(/\(\?\^:/g, '(?:')})$`);
}

/** A request matched to the schema. */
export interface MatchedPath {
  template: string;
  method: MethodSchema;
  /** The path's `{parameters}`, decoded. */
  pathParams: Record<string, string>;
}

/** The schema, with the path templates compiled. */
export class PveSchema {
  private readonly templates: { template: string; regex: RegExp; names: string[]; literals: number }[];

  constructor(readonly file: PveSchemaFile) {
    this.templates = Object.keys(file.paths)
      .map((template) => {
        const names: string[] = [];
        const regex = new RegExp(
          `^${template.replace(/\{([^}]+)\}|[^{]+/g, (m, name: string | undefined) => {
            if (name) {
              names.push(name);
              return '([^/]+)';
            }
            return m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          })}$`,
        );
        return { template, regex, names, literals: template.split('/').filter((s) => s && !s.startsWith('{')).length };
      })
      .sort((a, b) => b.literals - a.literals);
  }

  /** Loads the schema file (default: `findSchemaFile()`). */
  static load(path = findSchemaFile()): PveSchema {
    return new PveSchema(JSON.parse(readFileSync(path, 'utf8')) as PveSchemaFile);
  }

  /** The path and method a request names, or undefined when the schema has neither (PVE: 501). */
  match(httpMethod: string, path: string): MatchedPath | undefined {
    for (const t of this.templates) {
      const m = t.regex.exec(path);
      if (!m) continue;
      const method = this.file.paths[t.template]![httpMethod];
      if (!method) return undefined;
      const pathParams: Record<string, string> = {};
      t.names.forEach((name, i) => (pathParams[name] = decodeURIComponent(m[i + 1]!)));
      return { template: t.template, method, pathParams };
    }
    return undefined;
  }

  /** A method's schema by template (throws when the schema has no such method). */
  method(template: string, httpMethod: string): MethodSchema {
    const method = this.file.paths[template]?.[httpMethod];
    if (!method) throw new Error(`the schema has no ${httpMethod} ${template}`);
    return method;
  }
}

/** The schema of a parameter name, `net3` matching `net[n]`. */
export function paramSchema(method: MethodSchema, name: string): ParamSchema | undefined {
  const props = method.parameters?.properties ?? {};
  if (props[name]) return props[name];
  const m = /^([a-z_]+?)(\d+)$/i.exec(name);
  if (!m) return undefined;
  const indexed = props[`${m[1]}[n]`];
  // PVE's indexed keys: net0…net31 and the like
  return indexed && Number(m[2]) < 32 && String(Number(m[2])) === m[2] ? indexed : undefined;
}

/**
 * Checks request parameters (path, query and body merged, all strings) against a method's
 * schema; returns PVE's per-parameter errors (empty: valid).
 */
export function validateParams(method: MethodSchema, params: Record<string, string>): Record<string, string> {
  const errors: Record<string, string> = {};
  const props = method.parameters?.properties ?? {};
  for (const [name, value] of Object.entries(params)) {
    const schema = paramSchema(method, name);
    if (!schema) {
      if (method.parameters?.additionalProperties === 0 || method.parameters?.additionalProperties === undefined)
        errors[name] = 'property is not defined in schema and the schema does not allow additional properties';
      continue;
    }
    const problem = checkValue(schema, value);
    if (problem) errors[name] = problem;
  }
  for (const [name, schema] of Object.entries(props)) {
    if (name.endsWith('[n]') || schema.optional === 1) continue;
    if (!(name in params)) errors[name] = 'property is missing and it is not optional';
  }
  return errors;
}

/** Why a value does not fit its schema, or undefined. */
export function checkValue(schema: ParamSchema, value: string): string | undefined {
  switch (schema.type ?? 'string') {
    case 'integer':
      if (!/^[+-]?\d+$/.test(value)) return `type check ('integer') failed - got '${value}'`;
      break;
    case 'number':
      if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(value)) return `type check ('number') failed - got '${value}'`;
      break;
    case 'boolean':
      if (!/^(0|1|true|false|yes|no|on|off)$/i.test(value)) return `type check ('boolean') failed - got '${value}'`;
      break;
    default:
      break;
  }
  if (schema.type === 'integer' || schema.type === 'number') {
    const n = Number(value);
    if (schema.minimum !== undefined && n < schema.minimum) return `value must have a minimum value of ${schema.minimum}`;
    if (schema.maximum !== undefined && n > schema.maximum) return `value must have a maximum value of ${schema.maximum}`;
  }
  if (schema.minLength !== undefined && value.length < schema.minLength) return `value must be at least ${schema.minLength} characters long`;
  if (schema.maxLength !== undefined && value.length > schema.maxLength) return `value may only be ${schema.maxLength} characters long`;
  if (schema.enum && !schema.enum.includes(value)) return `value '${value}' does not have a value in the enumeration '${schema.enum.join(', ')}'`;
  if (schema.pattern && !patternRegex(schema.pattern).test(value)) return 'value does not match the regex pattern';
  if (typeof schema.format === 'string') {
    const check = NAMED_FORMATS[schema.format];
    if (check && !check(value)) return `value does not look like a valid ${schema.format}`;
  } else if (schema.format) {
    return checkPropertyString(schema.format, value);
  }
  return undefined;
}

/** Why a property string does not fit its format, or undefined. */
function checkPropertyString(format: Record<string, ParamSchema>, value: string): string | undefined {
  const defaultKey = Object.entries(format).find(([, s]) => s.default_key === 1)?.[0];
  const aliases: Record<string, KeyAlias> = {};
  for (const [key, s] of Object.entries(format)) if (s.alias && s.keyAlias) aliases[key] = { alias: s.alias, keyAlias: s.keyAlias };
  let parsed: Record<string, string>;
  try {
    parsed = parsePropertyString(value, defaultKey, aliases);
  } catch (err) {
    return `invalid format - ${(err as Error).message}`;
  }
  for (const [key, v] of Object.entries(parsed)) {
    const sub = format[key];
    if (!sub || sub.alias) return `invalid format - property '${key}' is not defined in the format`;
    const problem = checkValue(sub, v);
    if (problem) return `invalid format - ${key}: ${problem}`;
  }
  for (const [key, sub] of Object.entries(format)) {
    if (sub.alias || sub.optional === 1 || key in parsed) continue;
    return `invalid format - ${key}: property is missing and it is not optional`;
  }
  return undefined;
}

/** One request that breaks a method's schema in one way, and the parameter PVE must name. */
export interface Violation {
  param: string;
  /** What is wrong, in words. */
  kind: string;
  params: Record<string, string>;
}

/** A value that passes a parameter's schema (for the other parameters of a violating request). */
export function validValue(schema: ParamSchema): string {
  if (schema.enum) return schema.enum[0]!;
  if (typeof schema.format === 'object') {
    const parts: string[] = [];
    for (const [key, sub] of Object.entries(schema.format)) if (!sub.alias && sub.optional !== 1) parts.push(`${key}=${validValue(sub)}`);
    return parts.join(',');
  }
  const samples: Record<string, string> = {
    'pve-node': 'pve1',
    'pve-vmid': '100',
    'mac-addr': 'BC:24:11:00:00:01',
    'pve-bridge-id': 'vmbr0',
    'pve-configid-list': 'net1',
    'pve-tag-list': 'gatehouse',
    ipv4: '192.0.2.1',
    ipv6: '2001:db8::1',
    ip: '192.0.2.1',
    CIDR: '192.0.2.0/24',
    'pve-ipv4-config': 'dhcp',
    'pve-ipv6-config': 'auto',
  };
  if (typeof schema.format === 'string' && samples[schema.format]) return samples[schema.format]!;
  if (schema.type === 'integer' || schema.type === 'number') return String(schema.minimum ?? 1);
  if (schema.type === 'boolean') return '1';
  if (schema.pattern) return '';
  return 'x'.repeat(Math.max(1, schema.minLength ?? 1));
}

/**
 * Requests that each break one parameter of a method (plus one unknown parameter), every other
 * required parameter valid: a wrong type, a value outside the enum, pattern, range or length, a
 * bad named format or property-string sub-key, or a missing required parameter. Parameters whose
 * schema admits every string (optional, no constraint) have none.
 */
export function violations(method: MethodSchema, base: Record<string, string>): Violation[] {
  const props = method.parameters?.properties ?? {};
  const out: Violation[] = [{ param: 'gatehouse_unknown', kind: 'unknown parameter', params: { ...base, gatehouse_unknown: '1' } }];
  for (const [name, schema] of Object.entries(props)) {
    const param = name.endsWith('[n]') ? `${name.slice(0, -3)}1` : name;
    const bad = badValues(schema);
    for (const [kind, value] of bad) out.push({ param, kind, params: { ...base, [param]: value } });
    if (schema.optional !== 1 && !name.endsWith('[n]')) {
      const params = { ...base };
      delete params[param];
      out.push({ param, kind: 'missing', params });
    }
  }
  return out;
}

/** One bad value per way a parameter's schema can be broken (the first that applies, and a sub-key one for property strings). */
function badValues(schema: ParamSchema): [string, string][] {
  const bad: [string, string][] = [];
  if (schema.type === 'integer') bad.push(['not an integer', '1.5x']);
  else if (schema.type === 'number') bad.push(['not a number', 'fast']);
  else if (schema.type === 'boolean') bad.push(['not a boolean', 'maybe']);
  if (schema.minimum !== undefined) bad.push(['below minimum', String(schema.minimum - 1)]);
  if (schema.maximum !== undefined) bad.push(['above maximum', String(schema.maximum + 1)]);
  if (schema.maxLength !== undefined) bad.push(['too long', 'x'.repeat(schema.maxLength + 1)]);
  if (schema.minLength !== undefined && schema.minLength > 1) bad.push(['too short', 'x']);
  if (schema.enum) bad.push(['not in the enum', 'gatehouse-not-a-value']);
  if (schema.pattern) bad.push(['not matching the pattern', ' bad value \u0001']);
  if (typeof schema.format === 'string' && NAMED_FORMATS[schema.format]) bad.push([`not a ${schema.format}`, '-not/a:valid@value-']);
  if (typeof schema.format === 'object') {
    const valid = validValue(schema);
    bad.push(['unknown sub-key', `${valid}${valid ? ',' : ''}gatehouse=1`]);
    for (const [key, sub] of Object.entries(schema.format)) {
      if (sub.alias) continue;
      const [first] = badValues(sub);
      if (!first) continue;
      // the sub-key's bad value, everything else valid
      const parts = Object.entries(schema.format)
        .filter(([k, s]) => !s.alias && s.optional !== 1 && k !== key)
        .map(([k, s]) => `${k}=${validValue(s)}`);
      bad.push([`${key}: ${first[0]}`, [...parts, `${key}=${first[1]}`].join(',')]);
    }
  }
  return bad;
}
