/** Per-instance firewall rules, default policies and templates. */
import { CapabilityNotSupportedError, ConflictError, NotFoundError, ValidationError } from '../../support/errors.js';
import type { FirewallRuleSpecJson } from '../../db/schema.js';
import type { FirewallRule, TemplateView } from '../../services/firewall-service.js';
import type { Instance } from '../../services/instance-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { PortRangeRef } from './hosts.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './apply-status.js';

/** Which traffic a firewall rule matches. */
export const DirectionEnum = builder.enumType('FirewallDirection', {
  description: 'Which way traffic flows, seen from the instance.',
  values: {
    INBOUND: { value: 'inbound', description: 'Traffic to the instance.' },
    OUTBOUND: { value: 'outbound', description: 'Traffic from the instance.' },
  } as const,
});
const ProtocolEnum = builder.enumType('FirewallProtocol', {
  description: 'The protocol a firewall rule matches.',
  values: {
    TCP: { value: 'tcp', description: 'TCP; ports apply.' },
    UDP: { value: 'udp', description: 'UDP; ports apply.' },
    ICMP: { value: 'icmp', description: 'ICMP and ICMPv6 (ping); no ports.' },
    ALL: { value: 'all', description: 'Every protocol; no ports.' },
  } as const,
});
/** What a firewall rule or policy does. */
export const ActionEnum = builder.enumType('FirewallAction', {
  description: 'ALLOW: accept. REJECT: refuse with an error (TCP reset / ICMP unreachable). DROP: discard silently.',
  values: {
    ALLOW: { value: 'allow', description: 'Let the traffic through.' },
    REJECT: { value: 'reject', description: 'Refuse it: the sender gets a TCP reset or ICMP unreachable at once.' },
    DROP: { value: 'drop', description: 'Discard it silently: the sender times out.' },
  } as const,
});

type SchemaTypes = typeof builder extends PothosSchemaTypes.SchemaBuilder<infer Types> ? Types : never;

// what a rule of an instance and a rule of a template both are
function ruleSpecFields<Rule extends FirewallRuleSpecJson>(t: PothosSchemaTypes.ObjectFieldBuilder<SchemaTypes, Rule>) {
  return {
    direction: t.field({ type: DirectionEnum, description: 'INBOUND or OUTBOUND.', resolve: (r) => r.direction }),
    protocol: t.field({ type: ProtocolEnum, description: 'TCP, UDP, ICMP or ALL.', resolve: (r) => r.protocol }),
    sourceCidr: t.string({ nullable: true, description: 'Null: any source.', resolve: (r) => r.sourceCidr }),
    destinationCidr: t.string({ nullable: true, description: 'Null: any destination.', resolve: (r) => r.destinationCidr }),
    ports: t.field({ type: [PortRangeRef], description: 'Destination ports (tcp/udp); empty: every port.', resolve: (r) => r.ports }),
    action: t.field({ type: ActionEnum, description: 'What matching traffic meets.', resolve: (r) => r.action }),
    priority: t.int({ description: '1 (first) to 10000.', resolve: (r) => r.priority }),
    note: t.string({ description: 'Free text, e.g. "SSH from the office".', resolve: (r) => r.note }),
  };
}

const FirewallRuleRef = builder.objectRef<FirewallRule>('FirewallRule').implement({
  description:
    "A rule of an instance's firewall. Rules apply in priority order (lower first; ties in creation order); the first match decides, else the direction's policy.",
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The rule id.' }),
    ...ruleSpecFields(t),
    enabled: t.exposeBoolean('enabled', { description: 'A disabled rule is kept but not applied.' }),
    status: t.field({ type: ApplyStatusEnum, description: 'Whether the rule is in effect on the host.', resolve: (r) => r.status }),
    statusError: t.exposeString('statusError', { nullable: true, description: "FAILED: the driver's error; null otherwise." }),
    changedRevision: t.exposeInt('changedRevision', {
      description: "The host's desired revision in which this was created or last changed; status reports for older revisions do not apply to it.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the rule was added.' }),
  }),
});

const TemplateRuleRef = builder.objectRef<FirewallRuleSpecJson>('FirewallTemplateRule').implement({
  description: 'A rule a template adds, as FirewallRule without the per-instance state.',
  fields: (t) => ruleSpecFields(t),
});

const TemplateRef = builder.objectRef<TemplateView>('FirewallTemplate').implement({
  description: 'A reusable set of rules and policies: built in, or saved from one of your instances.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Built-in templates: builtin:web, builtin:database, builtin:strict, builtin:open.' }),
    name: t.exposeString('name', { description: 'Unique among your templates.' }),
    builtIn: t.exposeBoolean('builtIn', { description: 'True for the built-in templates, which cannot be deleted.' }),
    description: t.exposeString('description', { description: 'What the template allows; empty for saved templates.' }),
    inboundPolicy: t.field({ type: ActionEnum, description: 'The inbound policy it sets.', resolve: (v) => v.inboundPolicy }),
    outboundPolicy: t.field({ type: ActionEnum, description: 'The outbound policy it sets.', resolve: (v) => v.outboundPolicy }),
    rules: t.field({ type: [TemplateRuleRef], description: 'The rules it adds.', resolve: (v) => v.rules }),
  }),
});

const FirewallRef = builder.objectRef<Instance>('InstanceFirewall').implement({
  description: "An instance's firewall: its rules and, for traffic no rule matches, a policy per direction.",
  fields: (t) => ({
    inboundPolicy: t.field({ type: ActionEnum, description: 'For inbound traffic no rule matched. Default ALLOW.', resolve: (i) => i.firewallInboundPolicy }),
    outboundPolicy: t.field({
      type: ActionEnum,
      description: 'For outbound traffic no rule matched. Default ALLOW.',
      resolve: (i) => i.firewallOutboundPolicy,
    }),
    rules: t.field({
      type: [FirewallRuleRef],
      description: 'The rules in the order they apply.',
      resolve: (i, _a, ctx) => ctx.services.firewall.rulesFor(requireActor(ctx), i),
    }),
  }),
});

builder.objectField(InstanceRef, 'firewall', (t) => t.field({ type: FirewallRef, description: "The instance's firewall.", resolve: (i) => i }));

builder.queryField('firewallTemplates', (t) =>
  t.field({
    type: [TemplateRef],
    description: 'Built-in templates and your own.',
    resolve: (_r, _a, ctx) => ctx.services.firewall.templates(requireActor(ctx)),
  }),
);

const AddFirewallRuleInput = builder.inputType('AddFirewallRuleInput', {
  description: 'A rule for one instance.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    direction: t.field({ type: DirectionEnum, required: true, description: 'INBOUND or OUTBOUND.' }),
    protocol: t.field({ type: ProtocolEnum, required: true, description: 'TCP, UDP, ICMP or ALL.' }),
    sourceCidr: t.string({ description: 'A prefix or address ("203.0.113.0/24"); absent or "any": any address; an empty string is refused.' }),
    destinationCidr: t.string({ description: 'A prefix or address; absent or "any": any address; an empty string is refused.' }),
    ports: t.string({
      description: 'Destination ports for TCP/UDP, at most 64 entries: "22,80,443,8000-9000". Absent or "any": every port; an empty string is refused.',
    }),
    action: t.field({ type: ActionEnum, required: true, description: 'ALLOW, REJECT or DROP.' }),
    priority: t.int({ description: '1 (first) to 10000. Default 1000.' }),
    enabled: t.boolean({ description: 'Default true.' }),
    note: t.string({ description: 'Free text, at most 256 characters.' }),
  }),
});

const UpdateFirewallRuleInput = builder.inputType('UpdateFirewallRuleInput', {
  description: 'Absent fields keep their value; null clears sourceCidr, destinationCidr or ports.',
  fields: (t) => ({
    ruleId: t.id({ required: true, description: 'The rule.' }),
    direction: t.field({ type: DirectionEnum, description: 'INBOUND or OUTBOUND.' }),
    protocol: t.field({ type: ProtocolEnum, description: 'TCP, UDP, ICMP or ALL.' }),
    sourceCidr: t.string({ description: 'A prefix or address ("203.0.113.0/24"), or "any".' }),
    destinationCidr: t.string({ description: 'A prefix or address, or "any".' }),
    ports: t.string({ description: 'Destination ports for TCP/UDP: "22,80,443,8000-9000", or "any".' }),
    action: t.field({ type: ActionEnum, description: 'ALLOW, REJECT or DROP.' }),
    priority: t.int({ description: '1 (first) to 10000.' }),
    enabled: t.boolean({ description: 'False keeps the rule but stops applying it.' }),
    note: t.string({ description: 'Free text, at most 256 characters.' }),
  }),
});

const DeleteFirewallRuleInput = builder.inputType('DeleteFirewallRuleInput', {
  description: 'Which rule to delete.',
  fields: (t) => ({ ruleId: t.id({ required: true, description: 'The rule.' }) }),
});
const SetFirewallPolicyInput = builder.inputType('SetFirewallPolicyInput', {
  description: 'The policies for traffic no rule matches; absent ones keep their value.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    inbound: t.field({ type: ActionEnum, description: 'For inbound traffic.' }),
    outbound: t.field({ type: ActionEnum, description: 'For outbound traffic.' }),
  }),
});
const ApplyFirewallTemplateInput = builder.inputType('ApplyFirewallTemplateInput', {
  description: 'A template to stamp onto an instance.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance.' }),
    templateId: t.id({ required: true, description: 'A built-in id such as "builtin:web", or the id of one of your templates.' }),
    replace: t.boolean({ defaultValue: false, description: "Remove the instance's rules first." }),
    databaseSource: t.string({ description: 'For builtin:database (required there): the address or prefix allowed to reach 3306, e.g. "10.0.0.0/24".' }),
  }),
});
const SaveFirewallTemplateInput = builder.inputType('SaveFirewallTemplateInput', {
  description: "An instance's firewall to save as a template of yours.",
  fields: (t) => ({
    instanceId: t.id({ required: true, description: "Save this instance's rules and policies." }),
    name: t.string({ required: true, description: 'Unique among your templates (CONFLICT otherwise).' }),
  }),
});
const DeleteFirewallTemplateInput = builder.inputType('DeleteFirewallTemplateInput', {
  description: 'Which template to delete.',
  fields: (t) => ({ templateId: t.id({ required: true, description: 'One of your templates (built-in ones cannot be deleted).' }) }),
});

const AppliedTemplateRef = builder.objectRef<{ rules: FirewallRule[] }>('AppliedFirewallTemplate').implement({
  description: 'What applying a template added.',
  fields: (t) => ({ rules: t.field({ type: [FirewallRuleRef], description: 'The rules the template added.', resolve: (a) => a.rules }) }),
});

builder.mutationFields((t) => ({
  addFirewallRule: t.field({
    type: FirewallRuleRef,
    description: 'Adds a rule to an instance you own (any for admins).',
    args: { input: t.arg({ type: AddFirewallRuleInput, required: true, description: 'The rule.' }) },
    errors: resultOf('AddFirewallRule', 'rule', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.addRule(requireActor(ctx), input),
  }),
  updateFirewallRule: t.field({
    type: FirewallRuleRef,
    description: 'Changes a rule.',
    args: { input: t.arg({ type: UpdateFirewallRuleInput, required: true, description: 'The rule and the fields to change.' }) },
    errors: resultOf('UpdateFirewallRule', 'rule', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => {
      const { ruleId, ...rest } = input;
      // GraphQL absent fields arrive as undefined, explicit nulls as null
      const patch = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
      return ctx.services.firewall.updateRule(requireActor(ctx), { ruleId, ...patch });
    },
  }),
  deleteFirewallRule: t.field({
    type: FirewallRuleRef,
    description: 'Deletes a rule.',
    args: { input: t.arg({ type: DeleteFirewallRuleInput, required: true, description: 'The rule.' }) },
    errors: resultOf('DeleteFirewallRule', 'rule', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.deleteRule(requireActor(ctx), input.ruleId),
  }),
  setFirewallPolicy: t.field({
    type: InstanceRef,
    description: "Sets an instance's default policies.",
    args: { input: t.arg({ type: SetFirewallPolicyInput, required: true, description: 'The instance and its policies.' }) },
    errors: resultOf('SetFirewallPolicy', 'instance', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.setPolicy(requireActor(ctx), input),
  }),
  applyFirewallTemplate: t.field({
    type: AppliedTemplateRef,
    description: 'Stamps a template onto an instance as ordinary, editable rules and sets its policies.',
    args: { input: t.arg({ type: ApplyFirewallTemplateInput, required: true, description: 'The instance and the template.' }) },
    errors: resultOf('ApplyFirewallTemplate', 'applied', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: async (_r, { input }, ctx) => ({ rules: await ctx.services.firewall.applyTemplate(requireActor(ctx), input) }),
  }),
  saveFirewallTemplate: t.field({
    type: TemplateRef,
    description: "Saves an instance's rules and policies as a template of yours.",
    args: { input: t.arg({ type: SaveFirewallTemplateInput, required: true, description: 'The instance and a name.' }) },
    errors: resultOf('SaveFirewallTemplate', 'template', [ValidationError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.saveTemplate(requireActor(ctx), input),
  }),
  deleteFirewallTemplate: t.field({
    type: TemplateRef,
    description: 'Deletes one of your templates; rules already stamped from it stay.',
    args: { input: t.arg({ type: DeleteFirewallTemplateInput, required: true, description: 'The template.' }) },
    errors: resultOf('DeleteFirewallTemplate', 'template', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.deleteTemplate(requireActor(ctx), input.templateId),
  }),
}));
