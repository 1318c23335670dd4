/**
 * Web proxies: the list (certificate status and expiry, target health, live apply status, a
 * diagnosis on request), the create form (domain, target, protocol, TLS mode with certificate
 * upload, WebSocket) and the wildcard domain templates.
 */
import { useEffect, useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { DataTable } from '../components/data-table.js';
import { FormError, SelectField, TextAreaField, TextField } from '../components/form.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { ErrorFields, graphql, type ResultOf } from '../graphql.js';
import { StatusBadge, useForgetStatus } from '../live-status.js';
import { Link } from '../router.js';
import { useFormMutation } from '../use-form-mutation.js';

const WebProxiesQuery = graphql(`
  query WebProxies($first: Int!, $after: String) {
    webProxies(first: $first, after: $after) {
      edges {
        node {
          id
          domain
          instance {
            id
            name
          }
          targetAddress
          targetPort
          targetProtocol
          tlsMode
          websocket
          status
          statusError
          certificate {
            subject
            validTo
          }
          certificateStatus {
            issuer
            notAfter
            lastError
            checkedAt
          }
          targetHealth {
            state
            detail
            checkedAt
          }
          traffic {
            requests
            serverErrors
          }
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
  }
`);

const ProxyFormQuery = graphql(`
  query ProxyForm {
    instances(first: 200) {
      edges {
        node {
          id
          name
          host {
            name
          }
        }
      }
    }
    proxyDomainTemplates {
      id
      pattern
      targetPort
      targetProtocol
    }
  }
`);

const CreateWebProxy = graphql(
  `
    mutation CreateWebProxy($input: CreateWebProxyInput!) {
      createWebProxy(input: $input) {
        __typename
        ... on CreateWebProxyPayload {
          webProxy {
            id
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DeleteWebProxy = graphql(
  `
    mutation DeleteWebProxy($input: DeleteWebProxyInput!) {
      deleteWebProxy(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DiagnoseWebProxy = graphql(
  `
    mutation DiagnoseWebProxy($input: DiagnoseWebProxyInput!) {
      diagnoseWebProxy(input: $input) {
        __typename
        ... on DiagnoseWebProxyPayload {
          webProxy {
            id
            targetHealth {
              state
              detail
              checkedAt
            }
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const CreateTemplate = graphql(
  `
    mutation CreateProxyDomainTemplate($input: CreateProxyDomainTemplateInput!) {
      createProxyDomainTemplate(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const DeleteTemplate = graphql(
  `
    mutation DeleteProxyDomainTemplate($input: DeleteProxyDomainTemplateInput!) {
      deleteProxyDomainTemplate(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

type Proxy = ResultOf<typeof WebProxiesQuery>['webProxies']['edges'][number]['node'];
const TLS_MODES = ['NONE', 'SELF_SIGNED', 'ACME', 'UPLOADED'] as const;
type TlsModeName = (typeof TLS_MODES)[number];
const TLS_LABELS: Record<TlsModeName, string> = {
  NONE: 'None (HTTP only)',
  SELF_SIGNED: 'Self-signed (internal CA)',
  ACME: "ACME (Let's Encrypt)",
  UPLOADED: 'Uploaded certificate',
};
const PROXY_FIELDS = [
  'instanceId',
  'domain',
  'targetAddress',
  'targetPort',
  'targetProtocol',
  'tlsMode',
  'certificatePem',
  'privateKeyPem',
  'websocket',
] as const;
// while a TLS certificate is awaited the controller learns it by handshaking; the page asks again this often
const CERTIFICATE_POLL_MS = 2000;

/** A date as the reader's locale shows it, with the time left until it (hours under two days: internal-CA certificates live 12 h). */
function expiry(iso: string): string {
  const hours = Math.floor((Date.parse(iso) - Date.now()) / 3_600_000);
  const left = hours < 0 ? 'expired' : hours < 48 ? `in ${hours} h` : `in ${Math.floor(hours / 24)} d`;
  return `${new Date(iso).toLocaleString()} (${left})`;
}

/** What the certificate of a proxy is, in words. */
export function certificateText(proxy: Pick<Proxy, 'tlsMode' | 'certificateStatus' | 'certificate'>): string {
  if (proxy.tlsMode === 'NONE') return 'no TLS';
  const status = proxy.certificateStatus;
  if (status?.notAfter) return `${status.issuer ?? 'unknown issuer'}, expires ${expiry(status.notAfter)}`;
  if (status?.lastError) return `not served yet: ${status.lastError}`;
  if (proxy.certificate) return `uploaded (${proxy.certificate.subject}), expires ${expiry(proxy.certificate.validTo)}; not served yet`;
  return 'waiting for the certificate';
}

/** The later of two diagnoses (the one this page ran, the one the list loaded). */
function latest(a: Proxy['targetHealth'] | undefined, b: Proxy['targetHealth']): Proxy['targetHealth'] {
  if (!a) return b;
  if (!b) return a;
  return Date.parse(a.checkedAt) >= Date.parse(b.checkedAt) ? a : b;
}

function healthText(health: Proxy['targetHealth']): string {
  return health ? `${health.state}: ${health.detail}` : '—';
}

function awaitingCertificate(proxy: Proxy): boolean {
  // an issuance error is often passing (Caddy is still obtaining it): keep asking until one is served
  return proxy.tlsMode !== 'NONE' && !proxy.certificateStatus?.notAfter;
}

/** Reads a chosen file into a text field (certificate and key uploads). */
function FileText({ label, onText }: { label: string; onText(text: string): void }) {
  return (
    <label className="file-pick">
      {label}
      <input type="file" accept=".pem,.crt,.key,text/plain" onChange={async (e) => e.target.files?.[0] && onText(await e.target.files[0].text())} />
    </label>
  );
}

/** The Web proxies page. */
export function WebProxiesPage() {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: WebProxiesQuery, variables: pages.variables });
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  const rows = data?.webProxies.edges.map((e) => e.node) ?? [];
  const waiting = rows.some(awaitingCertificate);
  useEffect(() => {
    if (!waiting) return;
    const timer = setInterval(() => reexecute({ requestPolicy: 'network-only' }), CERTIFICATE_POLL_MS);
    return () => clearInterval(timer);
  }, [waiting, reexecute]);
  const [removal, submitDelete] = useFormMutation(DeleteWebProxy, []);
  const [diagnosis, submitDiagnose] = useFormMutation(DiagnoseWebProxy, []);
  // what a diagnosis run from this page found (the list shows the later of it and the loaded one)
  const [diagnosed, setDiagnosed] = useState<Record<string, Proxy['targetHealth']>>({});
  const diagnose = async (id: string) => {
    const payload = await submitDiagnose({ input: { webProxyId: id } });
    if (payload) setDiagnosed((d) => ({ ...d, [id]: payload.webProxy.targetHealth }));
  };

  return (
    <section>
      <h1>Web proxies</h1>
      {error && <p className="form-error">{error.message}</p>}
      <FormError errors={removal.errors} />
      <FormError errors={diagnosis.errors} />
      <DataTable
        label="Web proxies"
        columns={['Domain', 'Target', 'TLS', 'Certificate', 'Target health', 'Requests', 'Status']}
        actions
        empty={data && rows.length === 0 && 'No web proxies yet.'}
      >
        {rows.map((p) => (
          <tr key={p.id} data-proxy-id={p.id}>
            <td>
              {p.domain}
              {p.websocket && <small className="hint"> · WebSocket</small>}
            </td>
            <td>
              <Link href={`/instances/${p.instance.id}`}>{p.instance.name}</Link> {p.targetProtocol.toLowerCase()}://{p.targetAddress}:{p.targetPort}
            </td>
            <td>{p.tlsMode}</td>
            <td className="certificate">{certificateText(p)}</td>
            <td className="health">{healthText(latest(diagnosed[p.id], p.targetHealth))}</td>
            <td>
              {p.traffic.requests}
              {p.traffic.serverErrors !== '0' && <small className="hint"> ({p.traffic.serverErrors} 5xx)</small>}
            </td>
            <td>
              <StatusBadge id={p.id} status={p.status} error={p.statusError} />
            </td>
            <td className="row-actions">
              <button type="button" className="secondary" aria-label={`Diagnose ${p.domain}`} onClick={() => diagnose(p.id)}>
                Diagnose
              </button>
              <button
                type="button"
                className="danger"
                aria-label={`Delete ${p.domain}`}
                onClick={async () => (await submitDelete({ input: { webProxyId: p.id } })) && refresh()}
              >
                Delete
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.webProxies.pageInfo} label="Web proxies" />
      <CreateProxyForm onCreated={refresh} />
      <DomainTemplates />
    </section>
  );
}

function CreateProxyForm({ onCreated }: { onCreated(): void }) {
  const [{ data }] = useQuery({ query: ProxyFormQuery });
  const forget = useForgetStatus();
  const [form, setForm] = useState({
    instanceId: '',
    domain: '',
    targetAddress: '',
    targetPort: '80',
    targetProtocol: 'HTTP' as 'HTTP' | 'HTTPS',
    tlsMode: 'SELF_SIGNED' as TlsModeName,
    certificatePem: '',
    privateKeyPem: '',
    websocket: false,
  });
  const [state, submit] = useFormMutation(CreateWebProxy, PROXY_FIELDS);
  const instances = data?.instances.edges.map((e) => e.node) ?? [];
  const set = (name: keyof typeof form) => (event: { target: { value: string } }) => setForm((f) => ({ ...f, [name]: event.target.value }));
  const create = async (event: FormEvent) => {
    event.preventDefault();
    const uploaded = form.tlsMode === 'UPLOADED';
    const payload = await submit({
      input: {
        instanceId: form.instanceId || instances[0]?.id || '',
        domain: form.domain.trim(),
        targetAddress: form.targetAddress.trim() || null,
        targetPort: Number(form.targetPort),
        targetProtocol: form.targetProtocol,
        tlsMode: form.tlsMode,
        certificatePem: uploaded ? form.certificatePem : null,
        privateKeyPem: uploaded ? form.privateKeyPem : null,
        websocket: form.websocket,
      },
    });
    if (payload) {
      forget(payload.webProxy.id);
      setForm((f) => ({ ...f, domain: '', certificatePem: '', privateKeyPem: '' }));
      onCreated();
    }
  };
  return (
    <form className="card" onSubmit={create} aria-labelledby="add-proxy-title" noValidate>
      <h2 id="add-proxy-title">Add web proxy</h2>
      <FormError errors={state.errors} />
      <div className="form-grid">
        <SelectField label="Instance" name="instanceId" errors={state.errors} value={form.instanceId} onChange={set('instanceId')}>
          {instances.map((i) => (
            <option key={i.id} value={i.id}>
              {i.name} ({i.host.name})
            </option>
          ))}
        </SelectField>
        <TextField label="Domain" name="domain" errors={state.errors} value={form.domain} onChange={set('domain')} placeholder="app.example.com" required />
        <TextField label="Target port" name="targetPort" type="number" errors={state.errors} value={form.targetPort} onChange={set('targetPort')} required />
        <TextField
          label="Target address"
          name="targetAddress"
          errors={state.errors}
          value={form.targetAddress}
          onChange={set('targetAddress')}
          placeholder="the instance's first"
        />
        <SelectField label="Target protocol" name="targetProtocol" errors={state.errors} value={form.targetProtocol} onChange={set('targetProtocol')}>
          <option>HTTP</option>
          <option>HTTPS</option>
        </SelectField>
        <SelectField label="TLS" name="tlsMode" errors={state.errors} value={form.tlsMode} onChange={set('tlsMode')}>
          {TLS_MODES.map((m) => (
            <option key={m} value={m}>
              {TLS_LABELS[m]}
            </option>
          ))}
        </SelectField>
        <div className="field checkbox">
          <input id="proxy-websocket" type="checkbox" checked={form.websocket} onChange={(e) => setForm((f) => ({ ...f, websocket: e.target.checked }))} />
          <label htmlFor="proxy-websocket">WebSocket</label>
        </div>
      </div>
      {form.tlsMode === 'UPLOADED' && (
        <div className="form-grid wide">
          <div>
            <TextAreaField label="Certificate (PEM)" name="certificatePem" errors={state.errors} value={form.certificatePem} onChange={set('certificatePem')} />
            <FileText label="Read a certificate file" onText={(text) => setForm((f) => ({ ...f, certificatePem: text }))} />
          </div>
          <div>
            <TextAreaField label="Private key (PEM)" name="privateKeyPem" errors={state.errors} value={form.privateKeyPem} onChange={set('privateKeyPem')} />
            <FileText label="Read a key file" onText={(text) => setForm((f) => ({ ...f, privateKeyPem: text }))} />
          </div>
        </div>
      )}
      <div className="form-actions">
        <button type="submit" disabled={state.fetching || instances.length === 0}>
          Add web proxy
        </button>
      </div>
    </form>
  );
}

/** The user's wildcard templates (`*.user1.example.com`): each of their instances is served at `<name>.user1.example.com`. */
function DomainTemplates() {
  const [{ data }, reexecute] = useQuery({ query: ProxyFormQuery });
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  const [form, setForm] = useState({ pattern: '', targetPort: '80', targetProtocol: 'HTTP' as 'HTTP' | 'HTTPS' });
  const [state, submit] = useFormMutation(CreateTemplate, ['pattern', 'targetPort', 'targetProtocol']);
  const [removal, submitDelete] = useFormMutation(DeleteTemplate, []);
  const templates = data?.proxyDomainTemplates ?? [];
  const create = async (event: FormEvent) => {
    event.preventDefault();
    const payload = await submit({ input: { pattern: form.pattern.trim(), targetPort: Number(form.targetPort), targetProtocol: form.targetProtocol } });
    if (payload) {
      setForm((f) => ({ ...f, pattern: '' }));
      refresh();
    }
  };
  return (
    <>
      <h2>Wildcard domain templates</h2>
      <FormError errors={removal.errors} />
      <DataTable label="Wildcard domain templates" columns={['Pattern', 'Target']} actions empty={data && templates.length === 0 && 'No templates.'}>
        {templates.map((t) => (
          <tr key={t.id}>
            <td>{t.pattern}</td>
            <td>
              {t.targetProtocol.toLowerCase()}, port {t.targetPort}
            </td>
            <td>
              <button
                type="button"
                className="danger"
                aria-label={`Delete template ${t.pattern}`}
                onClick={async () => (await submitDelete({ input: { templateId: t.id } })) && refresh()}
              >
                Delete
              </button>
            </td>
          </tr>
        ))}
      </DataTable>
      <form className="card" onSubmit={create} aria-labelledby="add-template-title" noValidate>
        <h2 id="add-template-title">Add template</h2>
        <FormError errors={state.errors} />
        <div className="form-grid">
          <TextField
            label="Pattern"
            name="pattern"
            errors={state.errors}
            value={form.pattern}
            onChange={(e) => setForm((f) => ({ ...f, pattern: e.target.value }))}
            placeholder="*.user1.example.com"
            hint="One instance name per label: web1.user1.example.com"
          />
          <TextField
            label="Template target port"
            name="targetPort"
            type="number"
            errors={state.errors}
            value={form.targetPort}
            onChange={(e) => setForm((f) => ({ ...f, targetPort: e.target.value }))}
          />
          <SelectField
            label="Template target protocol"
            name="targetProtocol"
            errors={state.errors}
            value={form.targetProtocol}
            onChange={(e) => setForm((f) => ({ ...f, targetProtocol: e.target.value as 'HTTP' | 'HTTPS' }))}
          >
            <option>HTTP</option>
            <option>HTTPS</option>
          </SelectField>
        </div>
        <div className="form-actions">
          <button type="submit" disabled={state.fetching}>
            Add template
          </button>
        </div>
      </form>
    </>
  );
}
