/** The instance firewall: rules in priority order (add, edit, enable/disable, delete), default policies, templates. */
import { useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { DataTable } from '../../components/data-table.js';
import { FormError, SelectField, TextField } from '../../components/form.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { StatusBadge, useForgetStatus } from '../../live-status.js';
import { useFormMutation } from '../../use-form-mutation.js';
import type { InstanceData, TabProps } from './instance-page.js';

const RuleResult = graphql(`
  fragment RuleResult on FirewallRule {
    id
  }
`);

const AddRule = graphql(
  `
    mutation AddFirewallRule($input: AddFirewallRuleInput!) {
      addFirewallRule(input: $input) {
        __typename
        ... on AddFirewallRulePayload {
          rule {
            ...RuleResult
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields, RuleResult],
);

const UpdateRule = graphql(
  `
    mutation UpdateFirewallRule($input: UpdateFirewallRuleInput!) {
      updateFirewallRule(input: $input) {
        __typename
        ... on UpdateFirewallRulePayload {
          rule {
            ...RuleResult
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields, RuleResult],
);

const DeleteRule = graphql(
  `
    mutation DeleteFirewallRule($input: DeleteFirewallRuleInput!) {
      deleteFirewallRule(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const SetPolicy = graphql(
  `
    mutation SetFirewallPolicy($input: SetFirewallPolicyInput!) {
      setFirewallPolicy(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const Templates = graphql(`
  query FirewallTemplates {
    firewallTemplates {
      id
      name
      description
      builtIn
      inboundPolicy
      outboundPolicy
      rules {
        direction
      }
    }
  }
`);

const SaveTemplate = graphql(
  `
    mutation SaveFirewallTemplate($input: SaveFirewallTemplateInput!) {
      saveFirewallTemplate(input: $input) {
        __typename
        ... on SaveFirewallTemplatePayload {
          template {
            id
            name
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DeleteTemplate = graphql(
  `
    mutation DeleteFirewallTemplate($input: DeleteFirewallTemplateInput!) {
      deleteFirewallTemplate(input: $input) {
        __typename
        ... on DeleteFirewallTemplatePayload {
          template {
            id
            name
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const ApplyTemplate = graphql(
  `
    mutation ApplyFirewallTemplate($input: ApplyFirewallTemplateInput!) {
      applyFirewallTemplate(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DIRECTIONS = ['INBOUND', 'OUTBOUND'] as const;
const PROTOCOLS = ['TCP', 'UDP', 'ICMP', 'ALL'] as const;
const ACTIONS = ['ALLOW', 'REJECT', 'DROP'] as const;
const FIELDS = ['direction', 'protocol', 'ports', 'sourceCidr', 'destinationCidr', 'action', 'priority', 'note'] as const;

type Rule = InstanceData['firewall']['rules'][number];
type Draft = {
  direction: (typeof DIRECTIONS)[number];
  protocol: (typeof PROTOCOLS)[number];
  action: (typeof ACTIONS)[number];
  ports: string;
  sourceCidr: string;
  destinationCidr: string;
  priority: string;
  note: string;
};

const EMPTY: Draft = { direction: 'INBOUND', protocol: 'TCP', action: 'ALLOW', ports: '', sourceCidr: '', destinationCidr: '', priority: '', note: '' };

function portsText(rule: Rule): string {
  return rule.ports.map((p) => (p.start === p.end ? String(p.start) : `${p.start}-${p.end}`)).join(',');
}

/** The Firewall tab. */
export function FirewallTab({ instance, refresh }: TabProps) {
  const [draft, setDraft] = useState<Draft>(EMPTY);
  const [editing, setEditing] = useState<string>();
  const [add, submitAdd] = useFormMutation(AddRule, FIELDS);
  const [update, submitUpdate] = useFormMutation(UpdateRule, FIELDS);
  const [other, submitDelete] = useFormMutation(DeleteRule, []);
  const [policy, submitPolicy] = useFormMutation(SetPolicy, ['inbound', 'outbound']);
  const [template, submitTemplate] = useFormMutation(ApplyTemplate, ['templateId']);
  const [saveState, submitSave] = useFormMutation(SaveTemplate, ['name']);
  const [{ data: templates }, reloadTemplates] = useQuery({ query: Templates });
  const savedTemplates = templates?.firewallTemplates.filter((t) => !t.builtIn) ?? [];
  const [templateId, setTemplateId] = useState('');
  const [templateName, setTemplateName] = useState('');
  const [savedAs, setSavedAs] = useState<string>();
  const forget = useForgetStatus();
  const rules = [...instance.firewall.rules].sort((a, b) => a.priority - b.priority);
  const errors = editing ? update.errors : add.errors;
  const set = (name: keyof Draft) => (event: { target: { value: string } }) => setDraft((d) => ({ ...d, [name]: event.target.value }));

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const fields = {
      direction: draft.direction,
      protocol: draft.protocol,
      action: draft.action,
      ports: draft.ports.trim() || null,
      sourceCidr: draft.sourceCidr.trim() || null,
      destinationCidr: draft.destinationCidr.trim() || null,
      priority: draft.priority.trim() === '' ? null : Number(draft.priority),
      note: draft.note,
    };
    const payload = editing
      ? await submitUpdate({ input: { ruleId: editing, ...fields } })
      : await submitAdd({ input: { instanceId: instance.id, ...fields } });
    if (payload) {
      forget(payload.rule.id);
      setDraft(EMPTY);
      setEditing(undefined);
      refresh();
    }
  };
  const edit = (rule: Rule) => {
    setEditing(rule.id);
    setDraft({
      direction: rule.direction,
      protocol: rule.protocol,
      action: rule.action,
      ports: portsText(rule),
      sourceCidr: rule.sourceCidr ?? '',
      destinationCidr: rule.destinationCidr ?? '',
      priority: String(rule.priority),
      note: rule.note,
    });
  };
  const toggle = async (rule: Rule) => {
    if (await submitUpdate({ input: { ruleId: rule.id, enabled: !rule.enabled } })) {
      forget(rule.id);
      refresh();
    }
  };

  return (
    <div>
      <h2>Default policies</h2>
      <FormError errors={policy.errors} />
      <div className="toolbar">
        {(['inbound', 'outbound'] as const).map((direction) => (
          <SelectField
            key={direction}
            label={`${direction === 'inbound' ? 'Inbound' : 'Outbound'} policy`}
            name={direction}
            errors={policy.errors}
            value={direction === 'inbound' ? instance.firewall.inboundPolicy : instance.firewall.outboundPolicy}
            onChange={async (e) => (await submitPolicy({ input: { instanceId: instance.id, [direction]: e.target.value as Rule['action'] } })) && refresh()}
          >
            {ACTIONS.map((a) => (
              <option key={a}>{a}</option>
            ))}
          </SelectField>
        ))}
      </div>

      <h2>Rules</h2>
      <FormError errors={other.errors} />
      <DataTable
        label="Firewall rules"
        columns={['Priority', 'Direction', 'Protocol', 'Ports', 'Source', 'Action', 'Note', 'Status']}
        actions
        empty={rules.length === 0 && 'No rules: the default policies apply.'}
      >
        {rules.map((rule) => (
          <tr key={rule.id} className={rule.enabled ? undefined : 'disabled'}>
            <td>{rule.priority}</td>
            <td>{rule.direction}</td>
            <td>{rule.protocol}</td>
            <td>{portsText(rule) || 'all'}</td>
            <td>{rule.sourceCidr ?? 'any'}</td>
            <td>{rule.action}</td>
            <td>{rule.note}</td>
            <td>
              <StatusBadge id={rule.id} status={rule.status} error={rule.statusError} />
            </td>
            <td className="row-actions">
              <button type="button" className="secondary" onClick={() => edit(rule)}>
                Edit
              </button>
              <button type="button" className="secondary" onClick={() => toggle(rule)}>
                {rule.enabled ? 'Disable' : 'Enable'}
              </button>
              <button type="button" className="danger" onClick={async () => (await submitDelete({ input: { ruleId: rule.id } })) && refresh()}>
                Delete
              </button>
            </td>
          </tr>
        ))}
      </DataTable>

      <form className="card" onSubmit={submit} aria-labelledby="rule-title" noValidate>
        <h2 id="rule-title">{editing ? 'Edit rule' : 'Add rule'}</h2>
        <FormError errors={errors} />
        <div className="form-grid">
          <SelectField label="Direction" name="direction" errors={errors} value={draft.direction} onChange={set('direction')}>
            {DIRECTIONS.map((d) => (
              <option key={d}>{d}</option>
            ))}
          </SelectField>
          <SelectField label="Protocol" name="protocol" errors={errors} value={draft.protocol} onChange={set('protocol')}>
            {PROTOCOLS.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </SelectField>
          <TextField label="Destination ports" name="ports" errors={errors} value={draft.ports} onChange={set('ports')} placeholder="22,80,443 or 8000-9000" />
          <TextField label="Source" name="sourceCidr" errors={errors} value={draft.sourceCidr} onChange={set('sourceCidr')} placeholder="any" />
          <TextField
            label="Destination"
            name="destinationCidr"
            errors={errors}
            value={draft.destinationCidr}
            onChange={set('destinationCidr')}
            placeholder="any"
          />
          <SelectField label="Action" name="action" errors={errors} value={draft.action} onChange={set('action')}>
            {ACTIONS.map((a) => (
              <option key={a}>{a}</option>
            ))}
          </SelectField>
          <TextField label="Priority" name="priority" type="number" errors={errors} value={draft.priority} onChange={set('priority')} hint="Lower runs first" />
          <TextField label="Note" name="note" errors={errors} value={draft.note} onChange={set('note')} />
        </div>
        <div className="form-actions">
          <button type="submit">{editing ? 'Save rule' : 'Add rule'}</button>
          {editing && (
            <button
              type="button"
              className="secondary"
              onClick={() => {
                setEditing(undefined);
                setDraft(EMPTY);
              }}
            >
              Cancel
            </button>
          )}
        </div>
      </form>

      <form
        className="card"
        aria-labelledby="template-title"
        onSubmit={async (e) => {
          e.preventDefault();
          if (await submitTemplate({ input: { instanceId: instance.id, templateId } })) refresh();
        }}
      >
        <h2 id="template-title">Apply a template</h2>
        <FormError errors={template.errors} />
        <SelectField label="Template" name="templateId" errors={template.errors} value={templateId} onChange={(e) => setTemplateId(e.target.value)} required>
          <option value="">Choose…</option>
          {templates?.firewallTemplates.map((t) => (
            <option key={t.id} value={t.id}>
              {templateLabel(t)}
            </option>
          ))}
        </SelectField>
        <div className="form-actions">
          <button type="submit" disabled={!templateId}>
            Apply template
          </button>
        </div>
      </form>

      <SavedTemplates
        templates={savedTemplates}
        onDeleted={(id) => {
          if (id === templateId) setTemplateId('');
          reloadTemplates({ requestPolicy: 'network-only' });
        }}
      />

      <form
        className="card"
        aria-labelledby="save-template-title"
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setSavedAs(undefined);
          const payload = await submitSave({ input: { instanceId: instance.id, name: templateName.trim() } });
          if (payload) {
            setSavedAs(`Saved as the template “${payload.template.name}”.`);
            setTemplateName('');
            reloadTemplates({ requestPolicy: 'network-only' });
          }
        }}
      >
        <h2 id="save-template-title">Save as template</h2>
        <FormError errors={saveState.errors} />
        <TextField
          label="Template name"
          name="name"
          errors={saveState.errors}
          value={templateName}
          onChange={(e) => setTemplateName(e.target.value)}
          hint={templateContents(rules.length, instance.firewall.inboundPolicy, instance.firewall.outboundPolicy)}
          required
        />
        <div className="form-actions">
          <button type="submit" disabled={saveState.fetching || templateName.trim() === ''}>
            Save as template
          </button>
        </div>
        {savedAs && <p role="status">{savedAs}</p>}
      </form>
    </div>
  );
}

type SavedTemplate = { id: string; name: string; inboundPolicy: string; outboundPolicy: string; rules: readonly unknown[] };

/** The user's own saved templates, each with a Delete that asks first; built-in templates are not listed (they cannot be deleted). */
function SavedTemplates({ templates, onDeleted }: { templates: SavedTemplate[]; onDeleted(id: string): void }) {
  const [state, submitDelete, clearErrors] = useFormMutation(DeleteTemplate, []);
  const [confirming, setConfirming] = useState<string>();
  const [deleted, setDeleted] = useState<string>();
  const remove = async (template: SavedTemplate) => {
    setDeleted(undefined);
    const payload = await submitDelete({ input: { templateId: template.id } });
    if (payload) {
      setConfirming(undefined);
      setDeleted(`Deleted the template “${payload.template.name}”.`);
      onDeleted(template.id);
    }
  };
  return (
    <section className="card" aria-labelledby="saved-templates-title">
      <h2 id="saved-templates-title">Saved templates</h2>
      <p className="hint">Deleting a template keeps the rules already applied from it.</p>
      <FormError errors={state.errors} />
      <DataTable label="Saved templates" columns={['Name', 'Rules', 'Policies']} actions empty={templates.length === 0 && 'No saved templates.'}>
        {templates.map((t) => (
          <tr key={t.id}>
            <td>{t.name}</td>
            <td>{t.rules.length}</td>
            <td>
              inbound {t.inboundPolicy}, outbound {t.outboundPolicy}
            </td>
            <td className="row-actions">
              {confirming === t.id ? (
                <>
                  <span>Delete “{t.name}”?</span>{' '}
                  <button type="button" className="danger" disabled={state.fetching} onClick={() => remove(t)}>
                    Confirm delete
                  </button>
                  <button
                    type="button"
                    className="secondary"
                    onClick={() => {
                      setConfirming(undefined);
                      clearErrors();
                    }}
                  >
                    Cancel
                  </button>
                </>
              ) : (
                <button
                  type="button"
                  className="danger"
                  onClick={() => {
                    setConfirming(t.id);
                    setDeleted(undefined);
                    clearErrors();
                  }}
                >
                  Delete
                </button>
              )}
            </td>
          </tr>
        ))}
      </DataTable>
      {deleted && <p role="status">{deleted}</p>}
    </section>
  );
}

/** A template in the list to apply: its name, then what it allows (built in) or that it is one of the user's. */
export function templateLabel(template: { name: string; description: string; builtIn: boolean }): string {
  if (template.description) return `${template.name} — ${template.description}`;
  return template.builtIn ? template.name : `${template.name} (saved)`;
}

/** What saving as a template keeps: the rules shown and the default policies. */
export function templateContents(ruleCount: number, inbound: string, outbound: string): string {
  const rules = ruleCount === 0 ? 'No rules, only' : ruleCount === 1 ? 'The rule above and' : `The ${ruleCount} rules above and`;
  return `${rules} the default policies (inbound ${inbound}, outbound ${outbound}), to apply to other instances.`;
}
