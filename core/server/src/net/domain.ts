/**
 * Domain names for the reverse proxy: normalised to lower-case ASCII (IDNs to punycode), no
 * trailing dot, with an optional wildcard as the whole leftmost label (`*.example.com`).
 */
import { domainToASCII } from 'node:url';

/** A checked domain. */
export interface Domain {
  /** Lower-case ASCII, e.g. `shop.example.com` or `*.user1.example.com`. */
  readonly name: string;
  readonly wildcard: boolean;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Parses a domain; returns the reason it is not one instead of throwing. */
export function parseDomain(text: string): Domain | { error: string } {
  if (typeof text !== 'string' || text.length === 0) return { error: 'is empty' };
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(text)) return { error: 'contains spaces or control characters' };
  // URL parts ("a.example.net/x", "?q", "#f", "user@", ":8080") would be dropped by the IDNA conversion: refuse them
  const punctuation = /[\x21-\x29\x2b\x2c\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]/.exec(text);
  if (punctuation) return { error: `contains "${punctuation[0]}", which a domain name cannot (only letters, digits, "-", "." and a leading "*.")` };
  let rest = text.endsWith('.') ? text.slice(0, -1) : text;
  const wildcard = rest.startsWith('*.');
  if (wildcard) rest = rest.slice(2);
  if (rest.includes('*')) return { error: 'has a wildcard that is not the whole leftmost label ("*.example.com")' };
  const ascii = domainToASCII(rest);
  if (ascii === '') return { error: 'is not a valid domain name (IDNA conversion failed)' };
  // characters that IDNA maps to URL delimiters (fullwidth "／", "？") must not slip through either
  if (/[^a-z0-9.-]/.test(ascii)) return { error: 'is not a valid domain name' };
  const labels = ascii.split('.');
  if (labels.length < 2) return { error: 'needs at least two labels ("example.com")' };
  for (const label of labels) {
    if (!LABEL.test(label)) return { error: `has the invalid label "${label}" (1-63 letters, digits or "-", not starting or ending with "-")` };
  }
  if (/^[0-9]+$/.test(labels.at(-1)!)) return { error: 'ends in a numeric label; an IP address is not a domain' };
  const name = `${wildcard ? '*.' : ''}${ascii}`;
  if (name.length > 253) return { error: 'is longer than 253 characters' };
  return { name, wildcard };
}

/** Whether `domain` (possibly a wildcard) is covered by the wildcard `pattern` or equal to it. */
export function domainCoveredBy(domain: string, pattern: string): boolean {
  if (domain === pattern) return true;
  if (!pattern.startsWith('*.')) return false;
  const suffix = pattern.slice(1); // ".user1.example.com"
  const base = domain.startsWith('*.') ? domain.slice(2) : domain;
  return base.endsWith(suffix) && !base.slice(0, -suffix.length).includes('.');
}

/** The DNS label an instance gets under its owner's templates: its name, lower-case, other characters as `-`. */
export function templateLabel(instanceName: string): string {
  return instanceName
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}
