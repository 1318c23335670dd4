/**
 * Brings Caddy's lists (the proxy server's routes, TLS policies, loaded certificates, managed
 * names) to a wanted state with as few admin requests as it takes: Caddy 2.6 re-provisions its
 * whole config on every accepted change, so each request costs a reload, whatever its size.
 *
 * The writer remembers what Caddy holds (set by `loaded` after a full load, updated after each
 * accepted request), so it neither reads Caddy back nor sends what did not change. Per list:
 * one element changed in place → `PATCH /id/<id>`; one appended → `POST` to the list; one removed
 * → `DELETE /id/<id>`; anything else → the list replaced by one `PATCH`.
 *
 * Order, so Caddy never manages a name without its policy: new and changed policies and
 * certificates first (kept ones stay), then routes, then the `automate` list, then the policies
 * and certificates nothing uses any more are dropped.
 */
import type { CaddyAdminClient } from 'caddy-api-client';
import { AUTOMATE_PATH, LOAD_PEM_PATH, POLICIES_PATH, ROUTES_PATH, type SiteObjects } from './caddy-routes.js';

/** The part of Caddy's admin client the writer uses (a fake in unit tests). */
export type CaddyWriteClient = Pick<CaddyAdminClient, 'patchById' | 'post' | 'patch' | 'deleteById'>;

type Tagged = { '@id'?: string };

/** One list as Caddy holds it: its elements' ids in order, each with its value and JSON. */
interface ListState {
  ids: string[];
  items: Map<string, { value: Tagged; json: string }>;
}

function listState(values: readonly Tagged[], jsons: readonly string[] = values.map((v) => JSON.stringify(v))): ListState {
  const items = new Map(values.map((value, i) => [value['@id']!, { value, json: jsons[i]! }]));
  return { ids: values.map((v) => v['@id']!), items };
}

/** Writes Caddy's lists from a wanted state (see the file comment). */
export class CaddyWriter {
  private state: { routes: ListState; policies: ListState; pems: ListState; automate: string } | undefined;
  /** Admin requests sent since construction (the bench and the tests read it). */
  requests = 0;

  constructor(private readonly client: CaddyWriteClient) {}

  /** Caddy holds exactly `objects` (after a full load). */
  loaded(objects: SiteObjects): void {
    this.state = {
      routes: listState(objects.routes),
      policies: listState(objects.policies),
      pems: listState(objects.pems),
      automate: JSON.stringify(objects.automate),
    };
  }

  /** What Caddy holds is unknown (unreachable, or a load under way): `write` refuses until the next `loaded`. */
  forget(): void {
    this.state = undefined;
  }

  get known(): boolean {
    return this.state !== undefined;
  }

  /** Makes Caddy hold `wanted`. A refused request (CaddyApiError) leaves the requests before it applied and remembered. */
  async write(wanted: SiteObjects): Promise<void> {
    const state = this.state;
    if (!state) throw new Error('CaddyWriter.write before loaded: what Caddy holds is unknown');
    const union = (list: ListState, next: readonly Tagged[]) => {
      const byId = new Map(next.map((v) => [v['@id']!, v]));
      return [...list.ids.map((id) => byId.get(id) ?? list.items.get(id)!.value), ...next.filter((v) => !list.items.has(v['@id']!))];
    };
    await this.writeList(POLICIES_PATH, state.policies, union(state.policies, wanted.policies));
    await this.writeList(LOAD_PEM_PATH, state.pems, union(state.pems, wanted.pems));
    await this.writeList(ROUTES_PATH, state.routes, wanted.routes);
    const automate = JSON.stringify(wanted.automate);
    if (automate !== state.automate) {
      this.requests++;
      await this.client.patch(AUTOMATE_PATH, wanted.automate);
      state.automate = automate;
    }
    await this.writeList(POLICIES_PATH, state.policies, wanted.policies);
    await this.writeList(LOAD_PEM_PATH, state.pems, wanted.pems);
  }

  private async writeList(path: readonly string[], list: ListState, wanted: readonly Tagged[]): Promise<void> {
    const ids = wanted.map((v) => v['@id']!);
    const jsons = wanted.map((v) => JSON.stringify(v));
    const changed = ids.flatMap((id, i) => (list.items.get(id)?.json === jsons[i] ? [] : [i]));
    const samePrefix = (n: number) => ids.slice(0, n).every((id, i) => id === list.ids[i]);
    const sameIds = ids.length === list.ids.length && samePrefix(ids.length);
    if (changed.length === 0 && sameIds) return;
    const kept = new Set(ids);
    const gone = list.ids.filter((id) => !kept.has(id));
    this.requests++;
    if (changed.length === 1 && sameIds) {
      await this.client.patchById(ids[changed[0]!]!, [], wanted[changed[0]!]!);
    } else if (changed.length === 1 && changed[0] === ids.length - 1 && ids.length === list.ids.length + 1 && samePrefix(list.ids.length)) {
      await this.client.post(path, wanted[ids.length - 1]);
    } else if (changed.length === 0 && gone.length === 1 && list.ids.filter((id) => id !== gone[0]).every((id, i) => id === ids[i])) {
      await this.client.deleteById(gone[0]!);
    } else {
      await this.client.patch(path, wanted);
    }
    // (each element's JSON once per write: 10,000 domains' host tables are 840 KB of it)
    Object.assign(list, listState(wanted, jsons));
  }
}
