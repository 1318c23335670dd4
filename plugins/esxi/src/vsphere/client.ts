/**
 * A small typed client for the vSphere Web Services API (SOAP over HTTPS at `/sdk`), covering
 * only what the ESXi plugin calls: the service content, a session (its cookie kept, logged in
 * again once when vSphere says NotAuthenticated), properties through the property collector and a
 * container view, ReconfigVM_Task with NIC device changes and task waiting, and the host network
 * system's standard port groups. Polymorphic values carry an explicit `xsi:type`, elements go in
 * the order of vSphere's schema (ESXi rejects others), faults become `VsphereFault`.
 *
 * TLS: a pinned SHA-256 certificate thumbprint (ESXi's self-signed certificate), or a CA bundle.
 * Each request makes its own connection, verified before a byte of the request is sent.
 */
import { request } from 'node:https';
import { connect, type TLSSocket } from 'node:tls';
import { VsphereFault, VsphereTlsError, VsphereTransportError, soapFault, taskFault } from './faults.js';
import { child, childText, children, encodeElement, parseXml, type XmlElement, type XmlNode, type XmlValue } from './xml.js';

/** A managed object reference (`vm-42` of type `VirtualMachine`). */
export interface MoRef {
  type: string;
  value: string;
}

/** How to reach and trust one vSphere endpoint. */
export interface VsphereEndpoint {
  /** `https://host[:port]/sdk`. */
  url: URL;
  username: string;
  password: string;
  /** Exactly one of: the certificate's SHA-256 thumbprint (`AA:BB:…`), or PEM CA certificates. */
  tls: { thumbprint: string } | { ca: string };
  /** Per request, in milliseconds. */
  timeoutMs: number;
}

/** What the plugin reads from the service content. */
export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  apiVersion: string;
  apiType: string;
}

/** One object's properties from RetrievePropertiesEx: each requested path's value element. */
export interface ObjectContent {
  obj: MoRef;
  props: Map<string, XmlElement>;
}

/** A standard port group's shaping policy: bits per second, burst in bytes. */
export interface ShapingPolicy {
  enabled: boolean;
  averageBandwidth?: number;
  peakBandwidth?: number;
  burstSize?: number;
}

/** A standard port group as the plugin uses it. */
export interface PortGroupSpec {
  name: string;
  vlanId: number;
  vswitchName: string;
  shaping?: ShapingPolicy;
}

/** One NIC change of ReconfigVM_Task. */
export type NicChange =
  | { operation: 'add'; model: NicModel; portGroup: string; mac: string }
  | { operation: 'edit'; model: string; key: number; portGroup: string; mac: string; connected: boolean }
  | { operation: 'remove'; model: string; key: number };

/** The NIC models Gatehouse adds. */
export type NicModel = 'VirtualVmxnet3' | 'VirtualE1000e';

const SOAP_ACTION = 'urn:vim25/6.5';
const SERVICE_INSTANCE: MoRef = { type: 'ServiceInstance', value: 'ServiceInstance' };

/** A reference as a request element body. */
export function ref(r: MoRef): XmlNode {
  return { $attrs: { type: r.type }, $text: r.value };
}

/** A reference from a response element. */
export function moRef(element: XmlElement | undefined): MoRef | undefined {
  if (!element || !element.attrs.type) return undefined;
  return { type: element.attrs.type, value: element.text.trim() };
}

/** The client. Not safe for concurrent logins; the driver serialises its calls. */
export class VsphereClient {
  private cookie: string | undefined;
  private content: ServiceContent | undefined;
  private views = new Map<string, MoRef>();
  private loggingIn: Promise<string> | undefined;

  constructor(private readonly endpoint: VsphereEndpoint) {}

  /** The service content (fetched once). */
  async serviceContent(signal?: AbortSignal): Promise<ServiceContent> {
    if (this.content) return this.content;
    const r = await this.invoke('RetrieveServiceContent', SERVICE_INSTANCE, {}, signal);
    const about = child(r, 'about');
    const need = (name: string) => {
      const m = moRef(child(r, name));
      if (!m) throw new VsphereTransportError(`the service content has no ${name}`);
      return m;
    };
    this.content = {
      rootFolder: need('rootFolder'),
      propertyCollector: need('propertyCollector'),
      viewManager: need('viewManager'),
      sessionManager: need('sessionManager'),
      apiVersion: childText(about, 'apiVersion') ?? '',
      apiType: childText(about, 'apiType') ?? '',
    };
    return this.content;
  }

  /** Logs in, keeping the session cookie; returns the session key. Concurrent callers share one login. */
  login(signal?: AbortSignal): Promise<string> {
    this.loggingIn ??= this.newSession(signal).finally(() => (this.loggingIn = undefined));
    return this.loggingIn;
  }

  private async newSession(signal?: AbortSignal): Promise<string> {
    const sc = await this.serviceContent(signal);
    this.cookie = undefined;
    this.views.clear();
    const r = await this.invoke('Login', sc.sessionManager, { userName: this.endpoint.username, password: this.endpoint.password }, signal);
    return childText(r, 'key') ?? '';
  }

  /** Logs out (best effort: a session that already ended is fine). */
  async logout(signal?: AbortSignal): Promise<void> {
    if (!this.cookie || !this.content) return;
    try {
      await this.invoke('Logout', this.content.sessionManager, {}, signal);
    } catch (err) {
      if (!(err instanceof VsphereFault)) throw err;
    } finally {
      this.cookie = undefined;
      this.views.clear();
    }
  }

  /** Whether a session cookie is held. */
  get loggedIn(): boolean {
    return this.cookie !== undefined;
  }

  /**
   * Calls a method in the session: logs in first when there is no session, and once more when
   * vSphere says the session is gone (expired, terminated) — or that one of the session's views
   * is unknown, which is how a server that lost its sessions (restarted) may answer — then
   * repeats the call.
   */
  async call(method: string, self: MoRef, body: Record<string, XmlValue>, signal?: AbortSignal): Promise<XmlElement> {
    if (!this.cookie) await this.login(signal);
    try {
      return await this.invoke(method, self, body, signal);
    } catch (err) {
      if (!(err instanceof VsphereFault) || !this.sessionLost(err)) throw err;
      this.cookie = undefined;
      await this.login(signal);
      return await this.invoke(method, self, await this.rebind(body), signal);
    }
  }

  /** Properties of every object of `type` under the root folder (through a container view). */
  async retrieveAll(type: string, paths: readonly string[], signal?: AbortSignal): Promise<ObjectContent[]> {
    const view = await this.containerView(type, signal);
    return this.retrieve(
      {
        propSet: { type, pathSet: [...paths] },
        objectSet: { obj: ref(view), skip: true, selectSet: { $type: 'TraversalSpec', name: 'view', type: 'ContainerView', path: 'view', skip: false } },
      },
      signal,
    );
  }

  /** Properties of one object (undefined when it does not exist any more). */
  async retrieveOne(obj: MoRef, paths: readonly string[], signal?: AbortSignal): Promise<ObjectContent | undefined> {
    try {
      const [content] = await this.retrieve({ propSet: { type: obj.type, pathSet: [...paths] }, objectSet: { obj: ref(obj), skip: false } }, signal);
      return content;
    } catch (err) {
      if (err instanceof VsphereFault && err.type === 'ManagedObjectNotFound') return undefined;
      throw err;
    }
  }

  /** Reconfigures a VM's NICs (and sets `extraConfig` keys; "" removes one) and waits for the task. */
  async reconfigureNics(vm: MoRef, changes: readonly NicChange[], signal?: AbortSignal, extraConfig: Record<string, string> = {}): Promise<void> {
    const deviceChange = changes.map((c): XmlNode => ({ operation: c.operation, device: nicDevice(c) }));
    const extra = Object.entries(extraConfig).map(([key, value]): XmlNode => ({ $type: 'OptionValue', key, value: { $type: 'xsd:string', $text: value } }));
    const r = await this.call('ReconfigVM_Task', vm, { spec: { deviceChange, extraConfig: extra } }, signal);
    const task = moRef(r);
    if (!task) throw new VsphereTransportError('ReconfigVM_Task returned no task');
    await this.waitForTask(task, 'ReconfigVM_Task', signal);
  }

  /** Polls a task until it succeeds (or throws its fault). */
  async waitForTask(task: MoRef, method: string, signal?: AbortSignal): Promise<XmlElement | undefined> {
    const deadline = Date.now() + this.endpoint.timeoutMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      const info = (await this.retrieveOne(task, ['info'], signal))?.props.get('info');
      const state = childText(info, 'state');
      if (state === 'success') return child(info, 'result');
      if (state === 'error') throw taskFault(child(info, 'error'), method);
      if (Date.now() > deadline)
        throw new VsphereTransportError(`${method}: task ${task.value} still ${state ?? 'unknown'} after ${this.endpoint.timeoutMs} ms`);
      await sleep(delay, signal);
    }
  }

  /** The host's network system. */
  async networkSystem(signal?: AbortSignal): Promise<MoRef> {
    const [host] = await this.retrieveAll('HostSystem', ['configManager.networkSystem'], signal);
    const ns = moRef(host?.props.get('configManager.networkSystem'));
    if (!ns) throw new VsphereTransportError('the host has no network system');
    return ns;
  }

  /** The host's standard port groups. */
  async portGroups(signal?: AbortSignal): Promise<PortGroupSpec[]> {
    const ns = await this.networkSystem(signal);
    const info = (await this.retrieveOne(ns, ['networkInfo.portgroup'], signal))?.props.get('networkInfo.portgroup');
    return children(info, 'HostPortGroup').map((pg) => {
      const spec = child(pg, 'spec');
      const shaping = child(child(spec, 'policy'), 'shapingPolicy');
      const num = (name: string) => {
        const t = childText(shaping, name);
        return t === undefined ? undefined : Number(t);
      };
      return {
        name: childText(spec, 'name') ?? '',
        vlanId: Number(childText(spec, 'vlanId') ?? 0),
        vswitchName: childText(spec, 'vswitchName') ?? '',
        ...(shaping
          ? {
              shaping: {
                enabled: childText(shaping, 'enabled') === 'true',
                averageBandwidth: num('averageBandwidth'),
                peakBandwidth: num('peakBandwidth'),
                burstSize: num('burstSize'),
              },
            }
          : {}),
      };
    });
  }

  /** Adds a standard port group. */
  async addPortGroup(spec: PortGroupSpec, signal?: AbortSignal): Promise<void> {
    await this.call('AddPortGroup', await this.networkSystem(signal), { portgrp: portGroupSpec(spec) }, signal);
  }

  /** Replaces a standard port group's spec (same name and vSwitch). */
  async updatePortGroup(spec: PortGroupSpec, signal?: AbortSignal): Promise<void> {
    await this.call('UpdatePortGroup', await this.networkSystem(signal), { pgName: spec.name, portgrp: portGroupSpec(spec) }, signal);
  }

  /** Removes a standard port group. */
  async removePortGroup(name: string, signal?: AbortSignal): Promise<void> {
    await this.call('RemovePortGroup', await this.networkSystem(signal), { pgName: name }, signal);
  }

  /** RetrievePropertiesEx, then ContinueRetrievePropertiesEx while vSphere hands out a token. */
  private async retrieve(specSet: XmlNode, signal?: AbortSignal): Promise<ObjectContent[]> {
    const pc = (await this.serviceContent(signal)).propertyCollector;
    const out: ObjectContent[] = [];
    let r: XmlElement | undefined = await this.call('RetrievePropertiesEx', pc, { specSet, options: {} }, signal);
    for (;;) {
      for (const o of children(r, 'objects')) {
        const obj = moRef(child(o, 'obj'));
        if (!obj) continue;
        const props = new Map<string, XmlElement>();
        for (const p of children(o, 'propSet')) {
          const val = child(p, 'val');
          if (val) props.set(childText(p, 'name') ?? '', val);
        }
        out.push({ obj, props });
      }
      const token = childText(r, 'token');
      if (!token) return out;
      r = await this.call('ContinueRetrievePropertiesEx', pc, { token }, signal);
    }
  }

  /** A container view of every object of one type, made once per session. */
  private async containerView(type: string, signal?: AbortSignal): Promise<MoRef> {
    if (!this.cookie) await this.login(signal);
    const known = this.views.get(type);
    if (known) return known;
    const sc = await this.serviceContent(signal);
    const view = moRef(await this.call('CreateContainerView', sc.viewManager, { container: ref(sc.rootFolder), type, recursive: true }, signal));
    if (!view) throw new VsphereTransportError('CreateContainerView returned no view');
    this.views.set(type, view);
    return view;
  }

  private sessionLost(fault: VsphereFault): boolean {
    if (fault.type === 'NotAuthenticated') return true;
    return fault.type === 'ManagedObjectNotFound' && [...this.views.values()].some((v) => fault.message.includes(v.value));
  }

  /** After a new login the old session's views are gone: a body naming one gets the new one. */
  private async rebind(body: Record<string, XmlValue>): Promise<Record<string, XmlValue>> {
    const text = JSON.stringify(body);
    if (!text.includes('"ContainerView"')) return body;
    // the only view-bearing body is retrieveAll's; the view type is the propSet's type
    const specSet = body.specSet as XmlNode;
    const type = (specSet.propSet as XmlNode).type as string;
    return { ...body, specSet: { ...specSet, objectSet: { ...(specSet.objectSet as XmlNode), obj: ref(await this.containerView(type)) } } };
  }

  /** One SOAP request: the method's response element (`returnval`'s parent), or a VsphereFault. */
  private async invoke(method: string, self: MoRef, body: Record<string, XmlValue>, signal?: AbortSignal): Promise<XmlElement> {
    let inner = encodeElement('_this', ref(self));
    for (const [k, v] of Object.entries(body)) inner += encodeElement(k, v);
    const envelope =
      '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
      'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
      `<soapenv:Body><${method} xmlns="urn:vim25">${inner}</${method}></soapenv:Body></soapenv:Envelope>`;
    const { status, body: text, setCookie } = await this.post(envelope, signal);
    let doc: XmlElement;
    try {
      doc = parseXml(text);
    } catch (err) {
      throw new VsphereTransportError(`${method}: HTTP ${status} with a body that is not XML: ${text.slice(0, 120)}`, { cause: err });
    }
    const soapBody = child(doc, 'Body');
    const fault = child(soapBody, 'Fault');
    if (fault) throw soapFault(fault, method);
    const response = child(soapBody, `${method}Response`);
    if (!response) throw new VsphereTransportError(`${method}: HTTP ${status} without a ${method}Response`);
    if (setCookie) this.cookie = setCookie;
    return child(response, 'returnval') ?? response;
  }

  /** POSTs to /sdk over a connection verified against the pin or the CA. */
  private async post(envelope: string, signal?: AbortSignal): Promise<{ status: number; body: string; setCookie?: string }> {
    const socket = await this.connect(signal);
    const url = this.endpoint.url;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          createConnection: () => socket,
          method: 'POST',
          host: url.hostname,
          port: url.port || 443,
          path: url.pathname,
          signal,
          timeout: this.endpoint.timeoutMs,
          headers: {
            'content-type': 'text/xml; charset=utf-8',
            soapaction: SOAP_ACTION,
            connection: 'close',
            ...(this.cookie ? { cookie: this.cookie } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const cookie = res.headers['set-cookie']?.map((c) => c.split(';')[0]!).find((c) => c.startsWith('vmware_soap_session='));
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ...(cookie ? { setCookie: cookie } : {}) });
          });
          res.on('error', (err) => reject(new VsphereTransportError(`reading the answer of ${url.host}: ${err.message}`, { cause: err })));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.endpoint.timeoutMs} ms`)));
      req.on('error', (err) => reject(new VsphereTransportError(`request to ${url.host}: ${err.message}`, { cause: err })));
      req.end(envelope);
    });
  }

  /** A TLS connection whose certificate matched the pin (or chained to the CA) before it is used. */
  private connect(signal?: AbortSignal): Promise<TLSSocket> {
    const { url, tls, timeoutMs } = this.endpoint;
    return new Promise((resolve, reject) => {
      const pinned = 'thumbprint' in tls;
      const socket = connect({
        host: url.hostname,
        port: Number(url.port || 443),
        servername: /^[\d.]+$|:/.test(url.hostname) ? undefined : url.hostname,
        ...(pinned ? { rejectUnauthorized: false } : { ca: tls.ca }),
      });
      const fail = (err: Error) => {
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new VsphereTransportError(`connecting to ${url.host}: no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => fail(new VsphereTransportError(`connecting to ${url.host}: aborted`));
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (pinned) {
          const got = socket.getPeerCertificate().fingerprint256 ?? '';
          if (normalizeThumbprint(got) !== normalizeThumbprint(tls.thumbprint))
            return fail(new VsphereTlsError(`${url.host} presented the certificate ${got}, not the pinned ${tls.thumbprint}`));
        } else if (!socket.authorized) {
          return fail(new VsphereTlsError(`${url.host}: certificate not trusted by the configured CA (${String(socket.authorizationError)})`));
        }
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(
          err.message.includes('certificate') || ('code' in err && String(err.code).startsWith('ERR_TLS'))
            ? new VsphereTlsError(`${url.host}: ${err.message}`)
            : new VsphereTransportError(`connecting to ${url.host}: ${err.message}`, { cause: err }),
        );
      });
    });
  }
}

/** A thumbprint in one canonical form: upper-case hex pairs joined by colons. */
export function normalizeThumbprint(t: string): string {
  return (
    t
      .replace(/[^0-9a-fA-F]/g, '')
      .toUpperCase()
      .match(/../g) ?? []
  ).join(':');
}

/** The `device` element of one NIC change, fields in vSphere's schema order. */
function nicDevice(c: NicChange): XmlNode {
  if (c.operation === 'remove') return { $type: c.model, key: c.key };
  const backing: XmlNode = { $type: 'VirtualEthernetCardNetworkBackingInfo', deviceName: c.portGroup };
  const connected = c.operation === 'add' ? true : c.connected;
  return {
    $type: c.model,
    key: c.operation === 'add' ? -1 : c.key,
    // ESXi ignores it on an edit; vcsim needs it there (it clears the summary it holds)
    deviceInfo: { label: 'Network adapter', summary: c.portGroup },
    backing,
    connectable: { startConnected: true, allowGuestControl: true, connected },
    addressType: 'manual',
    macAddress: c.mac,
  };
}

/** A HostPortGroupSpec, fields in schema order. */
function portGroupSpec(spec: PortGroupSpec): XmlNode {
  const s = spec.shaping;
  return {
    name: spec.name,
    vlanId: spec.vlanId,
    vswitchName: spec.vswitchName,
    policy: s ? { shapingPolicy: { enabled: s.enabled, averageBandwidth: s.averageBandwidth, peakBandwidth: s.peakBandwidth, burstSize: s.burstSize } } : {},
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new VsphereTransportError('aborted'));
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(new VsphereTransportError('aborted'))), { once: true });
  });
}
