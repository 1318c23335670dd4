/**
 * The host directory: exact domains' routing as files Caddy reads per request (see caddy-routes.ts,
 * `hostsRoute`), so that adding a domain is a file operation instead of an admin request (which
 * makes Caddy 2.6 reload its whole config).
 *
 * Each domain is a directory `<domain>.host` holding one empty file `<mode>@<dial>`. A new domain's
 * directory is made under a temporary name and renamed into place, an edit renames the file inside
 * it, a removal deletes it: Caddy sees either the old entry or the new one, never a half-written
 * one. What the directory holds is remembered after each write, as the writer remembers Caddy's
 * lists, and read back whole by `reconcile` (at each full load).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HOST_ENTRY_SUFFIX } from './caddy-routes.js';

/** A domain as it may name a directory: lower-case letters, digits, dots and hyphens, not starting with a dot. */
const SAFE_DOMAIN = /^[a-z0-9-][a-z0-9.-]*$/;

/** Writes the host directory from a wanted state (domain → file name). */
export class HostDirectory {
  private state: Map<string, string> | undefined;

  constructor(readonly dir: string) {}

  /** Makes the directory hold exactly `wanted`, from what it holds now (read back); leftovers of interrupted writes go. */
  async reconcile(wanted: ReadonlyMap<string, string>): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const present = new Map<string, string>();
    for (const entry of await readdir(this.dir)) {
      const domain = entry.endsWith(HOST_ENTRY_SUFFIX) ? entry.slice(0, -HOST_ENTRY_SUFFIX.length) : undefined;
      const names = domain !== undefined && wanted.has(domain) ? await readdir(join(this.dir, entry)).catch(() => []) : [];
      if (domain !== undefined && names.length === 1) present.set(domain, names[0]!);
      else await rm(join(this.dir, entry), { recursive: true, force: true });
    }
    this.state = present;
    await this.write(wanted);
  }

  /** Brings the directory from what it was last made to hold to `wanted`, touching only the domains that differ; resolves with how many it touched. */
  async write(wanted: ReadonlyMap<string, string>): Promise<number> {
    const state = this.state;
    if (!state) throw new Error('HostDirectory.write before reconcile: what the directory holds is unknown');
    let touched = 0;
    for (const [domain, name] of wanted) {
      const had = state.get(domain);
      if (had === name) continue;
      // forgotten first: if the write fails half-way, the next reconcile reads it back
      state.delete(domain);
      await this.put(domain, name, had);
      state.set(domain, name);
      touched++;
    }
    for (const domain of [...state.keys()]) {
      if (wanted.has(domain)) continue;
      state.delete(domain);
      await rm(this.entry(domain), { recursive: true, force: true });
      touched++;
    }
    return touched;
  }

  /** Writes only `changes` (domain → file name; undefined: removed), as `write` would for a wanted state that differs from the last in them alone. */
  async apply(changes: ReadonlyMap<string, string | undefined>): Promise<void> {
    const state = this.state;
    if (!state) throw new Error('HostDirectory.apply before reconcile: what the directory holds is unknown');
    for (const [domain, name] of changes) {
      const had = state.get(domain);
      if (had === name) continue;
      state.delete(domain);
      if (name === undefined) await rm(this.entry(domain), { recursive: true, force: true });
      else {
        await this.put(domain, name, had);
        state.set(domain, name);
      }
    }
  }

  private entry(domain: string): string {
    if (!SAFE_DOMAIN.test(domain)) throw new Error(`Failed writing the host directory: ${JSON.stringify(domain)} is not a domain name`);
    return join(this.dir, `${domain}${HOST_ENTRY_SUFFIX}`);
  }

  /** One domain's entry: its file renamed when it had one, else a new directory renamed into place. */
  private async put(domain: string, name: string, had: string | undefined): Promise<void> {
    const entry = this.entry(domain);
    if (had !== undefined) {
      try {
        await rename(join(entry, had), join(entry, name));
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    const staged = join(this.dir, `.new-${randomUUID()}`);
    await mkdir(staged, { mode: 0o700 });
    await writeFile(join(staged, name), '');
    try {
      await rename(staged, entry);
    } catch (error) {
      // an entry this writer did not know of (a directory cannot be renamed onto a non-empty one, nor onto a file)
      if (!['ENOTEMPTY', 'EEXIST', 'ENOTDIR'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      await rm(entry, { recursive: true, force: true });
      await rename(staged, entry);
    }
  }
}
