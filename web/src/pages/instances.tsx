/** The instances the user may see (admins: all, with their owner), a page at a time, searchable by name within the page. */
import { useState } from 'react';
import { useQuery } from 'urql';
import { graphql } from '../graphql.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { Link } from '../router.js';

const InstancesQuery = graphql(`
  query Instances($first: Int!, $after: String) {
    instances(first: $first, after: $after) {
      edges {
        node {
          id
          name
          host {
            id
            name
          }
          owner {
            id
            name
          }
          nics {
            id
            addresses {
              id
              address
            }
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

/** The instances page. */
export function InstancesPage({ isAdmin }: { isAdmin: boolean }) {
  const pages = useCursorPages();
  const [{ data, fetching, error }] = useQuery({ query: InstancesQuery, variables: pages.variables });
  const [search, setSearch] = useState('');
  const needle = search.trim().toLowerCase();
  const rows = (data?.instances.edges ?? []).map((e) => e.node).filter((i) => !needle || i.name.toLowerCase().includes(needle));
  return (
    <section>
      <h1>Instances</h1>
      <div className="toolbar">
        <label htmlFor="instance-search">Search</label>
        <input id="instance-search" type="search" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="name" />
      </div>
      {error && <p className="form-error">{error.message}</p>}
      {fetching && !data && <p>Loading…</p>}
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Host</th>
            {isAdmin && <th scope="col">Owner</th>}
            <th scope="col">Addresses</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((instance) => (
            <tr key={instance.id}>
              <td>
                <Link href={`/instances/${instance.id}`}>{instance.name}</Link>
              </td>
              <td>{instance.host.name}</td>
              {isAdmin && <td>{instance.owner?.name ?? '—'}</td>}
              <td>{instance.nics.flatMap((n) => n.addresses.map((a) => a.address)).join(', ') || '—'}</td>
            </tr>
          ))}
          {data && rows.length === 0 && (
            <tr>
              <td colSpan={isAdmin ? 4 : 3}>No instances{needle ? ' match' : ''}.</td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager pages={pages} pageInfo={data?.instances.pageInfo} label="Instances" />
    </section>
  );
}
