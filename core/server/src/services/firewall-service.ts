/**
 * Per-instance firewalls: rules with direction, protocol, source and destination prefixes,
 * destination port lists and ranges, allow/reject/drop and a priority (lower first; ties by
 * creation), plus a default policy per direction. Templates stamp ordinary rules onto an instance
 * that the owner can then edit; users can save their own from an instance.
 */
import { checkFirewallPolicy, checkFirewallRule } from '@gatehouse/sdk';
import { and, asc, eq } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { firewallRules, firewallTemplates, instances, type FirewallRuleSpecJson } from '../db/schema.js';
import { ConflictError, NotFoundError, ValidationError, mapUniqueViolations } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { formatCidr, parseCidr, type IpCidr } from '../net/ip.js';
import { DatabaseToken } from '../di/tokens.js';
import { parsePortRanges, validId, validName, validNote } from '../support/validate.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import { requireCapability } from './capability-check.js';
import { loadOwnedInstance, type Instance } from './ownership.js';
import { bumpHostRevision } from './revision.js';

/** A rule row. */
export type FirewallRule = typeof firewallRules.$inferSelect;
/** A saved template row. */
export type FirewallTemplate = typeof firewallTemplates.$inferSelect;
/** What the firewall does with a packet. */
export type FirewallAction = FirewallRule['action'];

/** A rule as a client describes it. */
export interface FirewallRuleInput {
  direction: FirewallRule['direction'];
  protocol: FirewallRule['protocol'];
  sourceCidr?: string | null;
  destinationCidr?: string | null;
  /** "22,80,443,8000-9000"; tcp and udp only; absent or empty: every port. */
  ports?: string | null;
  action: FirewallAction;
  /** 1 (first) to 10000; default 1000. */
  priority?: number | null;
  enabled?: boolean | null;
  note?: string | null;
}

/** A template: built in (id `builtin:web` …) or saved by a user. */
export interface TemplateView {
  id: string;
  name: string;
  builtIn: boolean;
  description: string;
  inboundPolicy: FirewallAction;
  outboundPolicy: FirewallAction;
  rules: FirewallRuleSpecJson[];
}

const DEFAULT_PRIORITY = 1000;

function rule(
  direction: 'inbound' | 'outbound',
  protocol: FirewallRuleSpecJson['protocol'],
  ports: [number, number][],
  priority: number,
  note: string,
  sourceCidr: string | null = null,
): FirewallRuleSpecJson {
  return { direction, protocol, sourceCidr, destinationCidr: null, ports: ports.map(([start, end]) => ({ start, end })), action: 'allow', priority, note };
}

/** The built-in templates; `database` takes the address allowed to reach MySQL. */
export function builtInTemplates(databaseSource: string | null): TemplateView[] {
  return [
    {
      id: 'builtin:web',
      name: 'Web server',
      builtIn: true,
      description: 'HTTP, HTTPS and SSH in, ping allowed, everything else inbound dropped.',
      inboundPolicy: 'drop',
      outboundPolicy: 'allow',
      rules: [
        rule(
          'inbound',
          'tcp',
          [
            [80, 80],
            [443, 443],
          ],
          100,
          'HTTP and HTTPS',
        ),
        rule('inbound', 'tcp', [[22, 22]], 110, 'SSH'),
        rule('inbound', 'icmp', [], 120, 'ping'),
      ],
    },
    {
      id: 'builtin:database',
      name: 'Database',
      builtIn: true,
      description: 'MySQL (3306) only from one given address or prefix, and SSH; everything else inbound dropped.',
      inboundPolicy: 'drop',
      outboundPolicy: 'allow',
      rules: [rule('inbound', 'tcp', [[3306, 3306]], 100, 'MySQL from the application', databaseSource), rule('inbound', 'tcp', [[22, 22]], 110, 'SSH')],
    },
    {
      id: 'builtin:strict',
      name: 'Strict',
      builtIn: true,
      description: 'SSH only; everything else inbound dropped.',
      inboundPolicy: 'drop',
      outboundPolicy: 'allow',
      rules: [rule('inbound', 'tcp', [[22, 22]], 100, 'SSH')],
    },
    {
      id: 'builtin:open',
      name: 'Open',
      builtIn: true,
      description: 'No rules; everything allowed.',
      inboundPolicy: 'allow',
      outboundPolicy: 'allow',
      rules: [],
    },
  ];
}

/** A source or destination: absent/null or "any" is any address; an empty string is refused (it is no value, not "any"). */
function validCidr(field: string, value: string | null | undefined): IpCidr | null {
  if (value == null || value === 'any') return null;
  if (value.trim() === '') throw new ValidationError(field, value, 'is empty; leave it out or write "any" for any address');
  const cidr = parseCidr(value.includes('/') ? value : `${value}/${value.includes(':') ? 128 : 32}`);
  if ('error' in cidr) throw new ValidationError(field, value, cidr.error);
  return cidr;
}

/** Checks a rule and returns its stored form; the pure boundary check shared by rules and templates. */
export function validRule(input: FirewallRuleInput, field: string): FirewallRuleSpecJson {
  const source = validCidr(`${field}.sourceCidr`, input.sourceCidr);
  const destination = validCidr(`${field}.destinationCidr`, input.destinationCidr);
  if (source && destination && source.family !== destination.family) {
    throw new ValidationError(`${field}.destinationCidr`, input.destinationCidr, `is IPv${destination.family} but ${field}.sourceCidr is IPv${source.family}`);
  }
  if (input.ports != null && input.ports.trim() === '') {
    throw new ValidationError(`${field}.ports`, input.ports, 'is empty; leave it out or write "any" for every port');
  }
  const portText = input.ports?.trim() ?? 'any';
  const ports = portText === 'any' ? [] : parsePortRanges(`${field}.ports`, portText.split(','));
  if (ports.length > 0 && input.protocol !== 'tcp' && input.protocol !== 'udp') {
    throw new ValidationError(`${field}.ports`, input.ports, `cannot be given for protocol ${input.protocol}; ports apply to tcp and udp`);
  }
  if (ports.length > 64) throw new ValidationError(`${field}.ports`, input.ports, 'lists more than 64 ports or ranges');
  const priority = input.priority ?? DEFAULT_PRIORITY;
  if (!Number.isInteger(priority) || priority < 1 || priority > 10000)
    throw new ValidationError(`${field}.priority`, priority, 'must be an integer from 1 (first) to 10000');
  return {
    direction: input.direction,
    protocol: input.protocol,
    sourceCidr: source ? formatCidr(source) : null,
    destinationCidr: destination ? formatCidr(destination) : null,
    ports,
    action: input.action,
    priority,
    note: validNote(`${field}.note`, input.note),
  };
}

const inputField = (field: string) => `input.${field}`;

@injectable()
export class FirewallService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Adds a rule to an instance the actor owns. */
  async addRule(actor: Actor, input: FirewallRuleInput & { instanceId: string }): Promise<FirewallRule> {
    const spec = validRule(input, 'input');
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId);
      const host = await bumpHostRevision(tx, record, instance.hostId);
      requireCapability(host, 'adding firewall rule', (caps) => checkFirewallRule(caps, spec), inputField);
      const [row] = await this.insertRules(tx, record, instance, [spec], input.enabled ?? true, host.desiredRevision);
      return row!;
    });
  }

  /** Changes a rule; absent fields keep their value. */
  async updateRule(actor: Actor, input: Partial<FirewallRuleInput> & { ruleId: string }): Promise<FirewallRule> {
    const id = validId('input.ruleId', input.ruleId);
    return this.audit.transact(actor, async (tx, record) => {
      const before = await this.loadRule(tx, actor, id);
      const instance = await loadOwnedInstance(tx, actor, 'input.ruleId', before.instanceId);
      const merged: FirewallRuleInput = {
        direction: input.direction ?? before.direction,
        protocol: input.protocol ?? before.protocol,
        sourceCidr: input.sourceCidr !== undefined ? input.sourceCidr : before.sourceCidr,
        destinationCidr: input.destinationCidr !== undefined ? input.destinationCidr : before.destinationCidr,
        ports:
          input.ports !== undefined
            ? input.ports
            : before.ports.length === 0
              ? null
              : before.ports.map((p) => (p.start === p.end ? `${p.start}` : `${p.start}-${p.end}`)).join(','),
        action: input.action ?? before.action,
        priority: input.priority ?? before.priority,
        note: input.note !== undefined ? input.note : before.note,
      };
      const spec = validRule(merged, 'input');
      const host = await bumpHostRevision(tx, record, instance.hostId);
      requireCapability(host, 'updating firewall rule', (caps) => checkFirewallRule(caps, spec), inputField);
      const [after] = await tx
        .update(firewallRules)
        .set({ ...spec, enabled: input.enabled ?? before.enabled, status: 'pending', statusError: null, changedRevision: host.desiredRevision })
        .where(eq(firewallRules.id, id))
        .returning();
      await record({ action: 'firewallRule.update', objectType: 'FirewallRule', objectId: id, ownerId: before.ownerId, before, after });
      return after!;
    });
  }

  /** Deletes a rule. */
  async deleteRule(actor: Actor, ruleId: string): Promise<FirewallRule> {
    const id = validId('input.ruleId', ruleId);
    return this.audit.transact(actor, async (tx, record) => {
      const before = await this.loadRule(tx, actor, id);
      const instance = await loadOwnedInstance(tx, actor, 'input.ruleId', before.instanceId);
      await bumpHostRevision(tx, record, instance.hostId);
      await tx.delete(firewallRules).where(eq(firewallRules.id, id));
      await record({ action: 'firewallRule.delete', objectType: 'FirewallRule', objectId: id, ownerId: before.ownerId, before });
      return before;
    });
  }

  /** Sets the default policy of one or both directions. */
  async setPolicy(actor: Actor, input: { instanceId: string; inbound?: FirewallAction | null; outbound?: FirewallAction | null }): Promise<Instance> {
    return this.audit.transact(actor, async (tx, record) => {
      const before = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId, true);
      const host = await bumpHostRevision(tx, record, before.hostId);
      for (const [direction, action] of [
        ['inbound', input.inbound],
        ['outbound', input.outbound],
      ] as const) {
        if (action)
          requireCapability(
            host,
            'setting firewall policy',
            (caps) => checkFirewallPolicy(caps, direction, action),
            () => `input.${direction}`,
          );
      }
      const [after] = await tx
        .update(instances)
        .set({ firewallInboundPolicy: input.inbound ?? before.firewallInboundPolicy, firewallOutboundPolicy: input.outbound ?? before.firewallOutboundPolicy })
        .where(eq(instances.id, before.id))
        .returning();
      await record({ action: 'firewall.setPolicy', objectType: 'Instance', objectId: before.id, ownerId: before.ownerId, before, after });
      return after!;
    });
  }

  /**
   * Stamps a template's rules and policies onto an instance as ordinary rules. With `replace`,
   * the instance's existing rules are removed first; otherwise the template's rules are added.
   */
  async applyTemplate(
    actor: Actor,
    input: { instanceId: string; templateId: string; replace?: boolean | null; databaseSource?: string | null },
  ): Promise<FirewallRule[]> {
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId, true);
      const template = await this.template(tx, actor, input.templateId, input.databaseSource);
      const host = await bumpHostRevision(tx, record, instance.hostId);
      const templateField = (field: string) => `input.templateId (${field})`;
      requireCapability(host, 'applying firewall template', (caps) => checkFirewallPolicy(caps, 'inbound', template.inboundPolicy), templateField);
      requireCapability(host, 'applying firewall template', (caps) => checkFirewallPolicy(caps, 'outbound', template.outboundPolicy), templateField);
      for (const rule of template.rules) requireCapability(host, 'applying firewall template', (caps) => checkFirewallRule(caps, rule), templateField);
      if (input.replace) await this.removeForInstance(tx, record, instance.id, `template ${template.id} applied`);
      await tx
        .update(instances)
        .set({ firewallInboundPolicy: template.inboundPolicy, firewallOutboundPolicy: template.outboundPolicy })
        .where(eq(instances.id, instance.id));
      await record({
        action: 'firewall.applyTemplate',
        objectType: 'Instance',
        objectId: instance.id,
        ownerId: instance.ownerId,
        after: { templateId: template.id, replace: !!input.replace },
      });
      return this.insertRules(tx, record, instance, template.rules, true, host.desiredRevision);
    });
  }

  /** Saves an instance's rules and policies as a template of the actor. */
  async saveTemplate(actor: Actor, input: { instanceId: string; name: string }): Promise<TemplateView> {
    const name = validName('input.name', input.name);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId);
          const rules = await this.rulesOf(tx, instance.id);
          const row: FirewallTemplate = {
            id: newId(),
            ownerId: actor.userId,
            name,
            inboundPolicy: instance.firewallInboundPolicy,
            outboundPolicy: instance.firewallOutboundPolicy,
            rules: rules.map((r) => ({
              direction: r.direction,
              protocol: r.protocol,
              sourceCidr: r.sourceCidr,
              destinationCidr: r.destinationCidr,
              ports: r.ports,
              action: r.action,
              priority: r.priority,
              note: r.note,
            })),
            createdAt: new Date(),
          };
          await tx.insert(firewallTemplates).values(row);
          await record({ action: 'firewallTemplate.create', objectType: 'FirewallTemplate', objectId: row.id, ownerId: actor.userId, after: row });
          return this.view(row);
        }),
      { firewall_templates_owner_name_unique: () => new ConflictError('input.name', input.name, 'is already the name of one of your templates') },
    );
  }

  /** Deletes one of the actor's templates. */
  async deleteTemplate(actor: Actor, templateId: string): Promise<TemplateView> {
    const id = validId('input.templateId', templateId);
    return this.audit.transact(actor, async (tx, record) => {
      const [row] = await tx.select().from(firewallTemplates).where(eq(firewallTemplates.id, id));
      if (!row || (row.ownerId !== actor.userId && !isAdmin(actor))) throw new NotFoundError('input.templateId', id, 'firewall template');
      await tx.delete(firewallTemplates).where(eq(firewallTemplates.id, id));
      await record({ action: 'firewallTemplate.delete', objectType: 'FirewallTemplate', objectId: id, ownerId: row.ownerId, before: row });
      return this.view(row);
    });
  }

  /** Built-in templates and the actor's own. */
  async templates(actor: Actor): Promise<TemplateView[]> {
    const own = await this.db.select().from(firewallTemplates).where(eq(firewallTemplates.ownerId, actor.userId)).orderBy(asc(firewallTemplates.id));
    return [...builtInTemplates(null), ...own.map((t) => this.view(t))];
  }

  /** An instance's rules in evaluation order: by direction, priority, then creation. */
  async rulesOf(executor: Executor, instanceId: string): Promise<FirewallRule[]> {
    return executor
      .select()
      .from(firewallRules)
      .where(eq(firewallRules.instanceId, instanceId))
      .orderBy(asc(firewallRules.direction), asc(firewallRules.priority), asc(firewallRules.id));
  }

  /** Removes every rule of an instance (instance deleted, template replaced), with audit entries. */
  async removeForInstance(tx: Tx, record: RecordChange, instanceId: string, reason: string): Promise<void> {
    const rows = await tx.delete(firewallRules).where(eq(firewallRules.instanceId, instanceId)).returning();
    await record.many(
      rows.map((r) => ({ action: 'firewallRule.delete', objectType: 'FirewallRule', objectId: r.id, ownerId: r.ownerId, before: r, after: { reason } })),
    );
  }

  /** Rules of an instance the caller may see. */
  async rulesFor(actor: Actor, instance: Instance): Promise<FirewallRule[]> {
    if (!isAdmin(actor) && instance.ownerId !== actor.userId) return [];
    return this.rulesOf(this.db, instance.id);
  }

  private async insertRules(
    tx: Tx,
    record: RecordChange,
    instance: Instance,
    specs: readonly FirewallRuleSpecJson[],
    enabled: boolean,
    changedRevision: number,
  ): Promise<FirewallRule[]> {
    if (specs.length === 0) return [];
    const rows: FirewallRule[] = specs.map((spec) => ({
      id: newId(),
      instanceId: instance.id,
      ownerId: instance.ownerId,
      ...spec,
      enabled,
      status: 'pending',
      statusError: null,
      changedRevision,
      createdAt: new Date(),
    }));
    await tx.insert(firewallRules).values(rows);
    await record.many(rows.map((r) => ({ action: 'firewallRule.create', objectType: 'FirewallRule', objectId: r.id, ownerId: r.ownerId, after: r })));
    return rows;
  }

  private async loadRule(tx: Executor, actor: Actor, id: string): Promise<FirewallRule> {
    const [row] = await tx.select().from(firewallRules).where(eq(firewallRules.id, id));
    if (!row || (!isAdmin(actor) && row.ownerId !== actor.userId)) throw new NotFoundError('input.ruleId', id, 'firewall rule');
    return row;
  }

  private async template(tx: Executor, actor: Actor, templateId: string, databaseSource: string | null | undefined): Promise<TemplateView> {
    if (templateId.startsWith('builtin:')) {
      const source = validCidr('input.databaseSource', databaseSource);
      const found = builtInTemplates(source ? formatCidr(source) : null).find((t) => t.id === templateId);
      if (!found) throw new NotFoundError('input.templateId', templateId, 'firewall template');
      if (found.id === 'builtin:database' && !source)
        throw new ValidationError(
          'input.databaseSource',
          databaseSource ?? null,
          'is required by the Database template: the address or prefix allowed to reach 3306',
        );
      return found;
    }
    const id = validId('input.templateId', templateId);
    const [row] = await tx
      .select()
      .from(firewallTemplates)
      .where(and(eq(firewallTemplates.id, id), eq(firewallTemplates.ownerId, actor.userId)));
    if (!row) throw new NotFoundError('input.templateId', templateId, 'firewall template');
    return this.view(row);
  }

  private view(row: FirewallTemplate): TemplateView {
    return {
      id: row.id,
      name: row.name,
      builtIn: false,
      description: '',
      inboundPolicy: row.inboundPolicy,
      outboundPolicy: row.outboundPolicy,
      rules: row.rules,
    };
  }
}
