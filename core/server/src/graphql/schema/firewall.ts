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
export const DirectionEnum = builder.enumType('FirewallDirection', { values: { INBOUND: { value: 'inbound' }, OUTBOUND: { value: 'outbound' } } as const });
const ProtocolEnum = builder.enumType('FirewallProtocol', {
  values: { TCP: { value: 'tcp' }, UDP: { value: 'udp' }, ICMP: { value: 'icmp' }, ALL: { value: 'all' } } as const,
});
/** What a firewall rule or policy does. */
export const ActionEnum = builder.enumType('FirewallAction', {
  description: 'ALLOW: accept. REJECT: refuse with an error (TCP reset / ICMP unreachable). DROP: discard silently.',
  values: { ALLOW: { value: 'allow' }, REJECT: { value: 'reject' }, DROP: { value: 'drop' } } as const,
});

const FirewallRuleRef = builder.objectRef<FirewallRule>('FirewallRule').implement({
  description: 'Rules apply in priority order (lower first; ties in creation order); the first match decides.',
  fields: (t) => ({
    id: t.exposeID('id'),
    direction: t.field({ type: DirectionEnum, resolve: (r) => r.direction }),
    protocol: t.field({ type: ProtocolEnum, resolve: (r) => r.protocol }),
    sourceCidr: t.exposeString('sourceCidr', { nullable: true, description: 'Null: any source.' }),
    destinationCidr: t.exposeString('destinationCidr', { nullable: true, description: 'Null: any destination.' }),
    ports: t.field({ type: [PortRangeRef], description: 'Destination ports (tcp/udp); empty: every port.', resolve: (r) => r.ports }),
    action: t.field({ type: ActionEnum, resolve: (r) => r.action }),
    priority: t.exposeInt('priority'),
    enabled: t.exposeBoolean('enabled'),
    note: t.exposeString('note'),
    status: t.field({ type: ApplyStatusEnum, resolve: (r) => r.status }),
    statusError: t.exposeString('statusError', { nullable: true }),
    changedRevision: t.exposeInt('changedRevision', {
      description: "The host's desired revision in which this was created or last changed; status reports for older revisions do not apply to it.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const TemplateRuleRef = builder.objectRef<FirewallRuleSpecJson>('FirewallTemplateRule').implement({
  fields: (t) => ({
    direction: t.field({ type: DirectionEnum, resolve: (r) => r.direction }),
    protocol: t.field({ type: ProtocolEnum, resolve: (r) => r.protocol }),
    sourceCidr: t.exposeString('sourceCidr', { nullable: true }),
    destinationCidr: t.exposeString('destinationCidr', { nullable: true }),
    ports: t.field({ type: [PortRangeRef], resolve: (r) => r.ports }),
    action: t.field({ type: ActionEnum, resolve: (r) => r.action }),
    priority: t.exposeInt('priority'),
    note: t.exposeString('note'),
  }),
});

const TemplateRef = builder.objectRef<TemplateView>('FirewallTemplate').implement({
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Built-in templates: builtin:web, builtin:database, builtin:strict, builtin:open.' }),
    name: t.exposeString('name'),
    builtIn: t.exposeBoolean('builtIn'),
    description: t.exposeString('description'),
    inboundPolicy: t.field({ type: ActionEnum, resolve: (v) => v.inboundPolicy }),
    outboundPolicy: t.field({ type: ActionEnum, resolve: (v) => v.outboundPolicy }),
    rules: t.field({ type: [TemplateRuleRef], resolve: (v) => v.rules }),
  }),
});

const FirewallRef = builder.objectRef<Instance>('InstanceFirewall').implement({
  fields: (t) => ({
    inboundPolicy: t.field({ type: ActionEnum, description: 'For inbound traffic no rule matched.', resolve: (i) => i.firewallInboundPolicy }),
    outboundPolicy: t.field({ type: ActionEnum, resolve: (i) => i.firewallOutboundPolicy }),
    rules: t.field({ type: [FirewallRuleRef], resolve: (i, _a, ctx) => ctx.services.firewall.rulesFor(requireActor(ctx), i) }),
  }),
});

builder.objectField(InstanceRef, 'firewall', (t) => t.field({ type: FirewallRef, resolve: (i) => i }));

builder.queryField('firewallTemplates', (t) =>
  t.field({
    type: [TemplateRef],
    description: 'Built-in templates and your own.',
    resolve: (_r, _a, ctx) => ctx.services.firewall.templates(requireActor(ctx)),
  }),
);

const AddFirewallRuleInput = builder.inputType('AddFirewallRuleInput', {
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    direction: t.field({ type: DirectionEnum, required: true }),
    protocol: t.field({ type: ProtocolEnum, required: true }),
    sourceCidr: t.string({ description: 'A prefix or address ("203.0.113.0/24"); absent or "any": any address; an empty string is refused.' }),
    destinationCidr: t.string({ description: 'A prefix or address; absent or "any": any address; an empty string is refused.' }),
    ports: t.string({ description: 'Destination ports for TCP/UDP: "22,80,443,8000-9000". Absent or "any": every port; an empty string is refused.' }),
    action: t.field({ type: ActionEnum, required: true }),
    priority: t.int({ description: '1 (first) to 10000. Default 1000.' }),
    enabled: t.boolean({ description: 'Default true.' }),
    note: t.string(),
  }),
});

const UpdateFirewallRuleInput = builder.inputType('UpdateFirewallRuleInput', {
  description: 'Absent fields keep their value; null clears sourceCidr, destinationCidr or ports.',
  fields: (t) => ({
    ruleId: t.id({ required: true }),
    direction: t.field({ type: DirectionEnum }),
    protocol: t.field({ type: ProtocolEnum }),
    sourceCidr: t.string(),
    destinationCidr: t.string(),
    ports: t.string(),
    action: t.field({ type: ActionEnum }),
    priority: t.int(),
    enabled: t.boolean(),
    note: t.string(),
  }),
});

const DeleteFirewallRuleInput = builder.inputType('DeleteFirewallRuleInput', { fields: (t) => ({ ruleId: t.id({ required: true }) }) });
const SetFirewallPolicyInput = builder.inputType('SetFirewallPolicyInput', {
  fields: (t) => ({ instanceId: t.id({ required: true }), inbound: t.field({ type: ActionEnum }), outbound: t.field({ type: ActionEnum }) }),
});
const ApplyFirewallTemplateInput = builder.inputType('ApplyFirewallTemplateInput', {
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    templateId: t.id({ required: true }),
    replace: t.boolean({ defaultValue: false, description: "Remove the instance's rules first." }),
    databaseSource: t.string({ description: 'For builtin:database: the address or prefix allowed to reach 3306.' }),
  }),
});
const SaveFirewallTemplateInput = builder.inputType('SaveFirewallTemplateInput', {
  fields: (t) => ({ instanceId: t.id({ required: true, description: "Save this instance's rules and policies." }), name: t.string({ required: true }) }),
});
const DeleteFirewallTemplateInput = builder.inputType('DeleteFirewallTemplateInput', { fields: (t) => ({ templateId: t.id({ required: true }) }) });

const AppliedTemplateRef = builder.objectRef<{ rules: FirewallRule[] }>('AppliedFirewallTemplate').implement({
  fields: (t) => ({ rules: t.field({ type: [FirewallRuleRef], description: 'The rules the template added.', resolve: (a) => a.rules }) }),
});

builder.mutationFields((t) => ({
  addFirewallRule: t.field({
    type: FirewallRuleRef,
    args: { input: t.arg({ type: AddFirewallRuleInput, required: true }) },
    errors: resultOf('AddFirewallRule', 'rule', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.addRule(requireActor(ctx), input),
  }),
  updateFirewallRule: t.field({
    type: FirewallRuleRef,
    args: { input: t.arg({ type: UpdateFirewallRuleInput, required: true }) },
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
    args: { input: t.arg({ type: DeleteFirewallRuleInput, required: true }) },
    errors: resultOf('DeleteFirewallRule', 'rule', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.deleteRule(requireActor(ctx), input.ruleId),
  }),
  setFirewallPolicy: t.field({
    type: InstanceRef,
    args: { input: t.arg({ type: SetFirewallPolicyInput, required: true }) },
    errors: resultOf('SetFirewallPolicy', 'instance', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.setPolicy(requireActor(ctx), input),
  }),
  applyFirewallTemplate: t.field({
    type: AppliedTemplateRef,
    description: 'Stamps a template onto an instance as ordinary, editable rules and sets its policies.',
    args: { input: t.arg({ type: ApplyFirewallTemplateInput, required: true }) },
    errors: resultOf('ApplyFirewallTemplate', 'applied', [ValidationError, NotFoundError, CapabilityNotSupportedError]),
    resolve: async (_r, { input }, ctx) => ({ rules: await ctx.services.firewall.applyTemplate(requireActor(ctx), input) }),
  }),
  saveFirewallTemplate: t.field({
    type: TemplateRef,
    args: { input: t.arg({ type: SaveFirewallTemplateInput, required: true }) },
    errors: resultOf('SaveFirewallTemplate', 'template', [ValidationError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.saveTemplate(requireActor(ctx), input),
  }),
  deleteFirewallTemplate: t.field({
    type: TemplateRef,
    args: { input: t.arg({ type: DeleteFirewallTemplateInput, required: true }) },
    errors: resultOf('DeleteFirewallTemplate', 'template', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.firewall.deleteTemplate(requireActor(ctx), input.templateId),
  }),
}));
