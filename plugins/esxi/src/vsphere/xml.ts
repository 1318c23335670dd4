/**
 * The little XML the vSphere SOAP API needs, written here rather than taken from a package: what
 * vSphere sends is plain (elements, attributes, text and the five predefined entities plus numeric
 * references; no DTDs, no CDATA, no processing instructions after the declaration), and what we
 * send is built from typed values. A parser for that subset is smaller than the dependency tree of
 * the general ones, and refuses what it does not understand instead of guessing.
 */

/** An element: local name (prefix dropped), attributes by local name, children and text. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

/** Malformed XML in a response. */
export class XmlSyntaxError extends Error {
  constructor(message: string, offset: number) {
    super(`${message} at offset ${offset}`);
    this.name = 'XmlSyntaxError';
  }
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decode(text: string, offset: number): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);|&/g, (whole, ref: string | undefined) => {
    if (ref === undefined) throw new XmlSyntaxError('bare "&"', offset);
    if (ref.startsWith('#x')) return String.fromCodePoint(parseInt(ref.slice(2), 16));
    if (ref.startsWith('#')) return String.fromCodePoint(parseInt(ref.slice(1), 10));
    const entity = ENTITIES[ref];
    if (entity === undefined) throw new XmlSyntaxError(`unknown entity ${whole}`, offset);
    return entity;
  });
}

function localName(qualified: string): string {
  const colon = qualified.indexOf(':');
  return colon < 0 ? qualified : qualified.slice(colon + 1);
}

/** Parses a document into its root element. */
export function parseXml(xml: string): XmlElement {
  let i = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const tag = /^<(\/?)([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/;
  const attr = /([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt < 0 ? xml.length : lt);
    if (text.length > 0) {
      const top = stack[stack.length - 1];
      if (top) top.text += decode(text, i);
      else if (text.trim() !== '') throw new XmlSyntaxError('text outside the root element', i);
    }
    if (lt < 0) break;
    i = lt;
    if (xml.startsWith('<?', i)) {
      const end = xml.indexOf('?>', i);
      if (end < 0 || root || stack.length > 0) throw new XmlSyntaxError('misplaced processing instruction', i);
      i = end + 2;
      continue;
    }
    if (xml.startsWith('<!--', i)) {
      const end = xml.indexOf('-->', i);
      if (end < 0) throw new XmlSyntaxError('unterminated comment', i);
      i = end + 3;
      continue;
    }
    if (xml.startsWith('<!', i)) throw new XmlSyntaxError('DTDs and CDATA are not accepted', i);
    const m = tag.exec(xml.slice(i, i + 64 * 1024));
    if (!m) throw new XmlSyntaxError('malformed tag', i);
    const [whole, closing, qname, attrText, selfClosing] = m;
    if (closing) {
      const open = stack.pop();
      if (!open || open.name !== localName(qname!) || attrText || selfClosing) throw new XmlSyntaxError(`unexpected </${qname}>`, i);
      if (stack.length === 0) root = open;
    } else {
      if (root) throw new XmlSyntaxError('a second root element', i);
      const element: XmlElement = { name: localName(qname!), attrs: {}, children: [], text: '' };
      for (const a of attrText!.matchAll(attr)) element.attrs[localName(a[1]!)] = decode(a[2] ?? a[3] ?? '', i);
      stack[stack.length - 1]?.children.push(element);
      if (selfClosing) {
        if (stack.length === 0) root = element;
      } else stack.push(element);
    }
    i += whole!.length;
  }
  if (stack.length > 0 || !root) throw new XmlSyntaxError('unterminated document', i);
  return root;
}

/** The first child of that name, if any. */
export function child(element: XmlElement | undefined, name: string): XmlElement | undefined {
  return element?.children.find((c) => c.name === name);
}

/** Every child of that name. */
export function children(element: XmlElement | undefined, name: string): XmlElement[] {
  return element?.children.filter((c) => c.name === name) ?? [];
}

/** A child's text, trimmed, if the child exists. */
export function childText(element: XmlElement | undefined, name: string): string | undefined {
  const c = child(element, name);
  return c === undefined ? undefined : c.text.trim();
}

/** Text escaped for element content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&${({ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot', "'": 'apos' } as const)[c as '&']};`);
}

/**
 * A value to encode: a string or number (text), a `XmlNode` (element with optional `xsi:type`
 * and attributes), or an array (repeated elements of one name).
 */
export type XmlValue = string | number | boolean | XmlNode | readonly XmlValue[] | undefined;

/** An element body: `$type` is written as `xsi:type`, `$attrs` as attributes, the other keys as child elements in order. */
export interface XmlNode {
  $type?: string;
  $attrs?: Record<string, string>;
  $text?: string;
  [child: string]: XmlValue | Record<string, string>;
}

/** Encodes one named element; undefined values are left out, arrays repeat the element. */
export function encodeElement(name: string, value: XmlValue): string {
  if (value === undefined) return '';
  if (Array.isArray(value)) return value.map((v) => encodeElement(name, v as XmlValue)).join('');
  if (typeof value !== 'object') return `<${name}>${escapeXml(String(value))}</${name}>`;
  const node = value as XmlNode;
  let attrs = node.$type ? ` xsi:type="${escapeXml(node.$type)}"` : '';
  for (const [k, v] of Object.entries(node.$attrs ?? {})) attrs += ` ${k}="${escapeXml(v)}"`;
  let body = node.$text !== undefined ? escapeXml(node.$text) : '';
  for (const [k, v] of Object.entries(node)) if (!k.startsWith('$')) body += encodeElement(k, v as XmlValue);
  return `<${name}${attrs}>${body}</${name}>`;
}
