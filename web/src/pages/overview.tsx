/** Overview: hosts with their agent's status, counts of instances, forwards and proxies, the pools' utilisation. */
import { useQuery, useSubscription } from 'urql';
import { DataTable } from '../components/data-table.js';
import { Pager, useCursorPages } from '../components/pager.js';
import { graphql } from '../graphql.js';
import { Link } from '../router.js';
import { UtilisationBar } from './ip-pools.js';

const OverviewQuery = graphql(`
  query Overview($first: Int!, $after: String) {
    hosts(first: $first, after: $after) {
      edges {
        node {
          id
          name
          backend
          desiredRevision
          publicAddresses
          agent {
            online
            appliedRevision
            lastError
            lastSeenAt
            driftRepairs
            agentVersion
          }
        }
      }
      pageInfo {
        endCursor
        hasNextPage
      }
    }
    instances(first: 0) {
      totalCount
    }
    portForwards(first: 0) {
      totalCount
    }
    webProxies(first: 0) {
      totalCount
    }
    ipPools(first: 50) {
      edges {
        node {
          id
          name
          subnet
          utilisation {
            size
            allocated
            reserved
            free
          }
        }
      }
    }
  }
`);

const AgentStatusChanged = graphql(`
  subscription OverviewAgentStatus {
    hostAgentStatusChanged {
      hostId
      online
    }
  }
`);

/** The exact number (the connection's count query), "…" while loading. */
function count(connection: { totalCount: number } | undefined): string {
  return connection ? connection.totalCount.toLocaleString('en') : '…';
}

/** The Overview page. */
export function OverviewPage() {
  const pages = useCursorPages();
  const [{ data, error }, reexecute] = useQuery({ query: OverviewQuery, variables: pages.variables });
  // an agent coming or going: load the hosts' status again
  useSubscription({ query: AgentStatusChanged }, (_previous, event) => {
    reexecute({ requestPolicy: 'network-only' });
    return event;
  });
  const hosts = data?.hosts.edges.map((e) => e.node) ?? [];
  const pools = data?.ipPools.edges.map((e) => e.node) ?? [];
  return (
    <section>
      <h1>Overview</h1>
      {error && <p className="form-error">{error.message}</p>}
      <dl className="counts">
        <div>
          <dt>Instances</dt>
          <dd>
            <Link href="/instances">{count(data?.instances)}</Link>
          </dd>
        </div>
        <div>
          <dt>Port forwards</dt>
          <dd>{count(data?.portForwards)}</dd>
        </div>
        <div>
          <dt>Web proxies</dt>
          <dd>
            <Link href="/proxies">{count(data?.webProxies)}</Link>
          </dd>
        </div>
      </dl>
      <h2>Hosts</h2>
      <DataTable label="Hosts" columns={['Host', 'Agent', 'Applied revision', 'Drift repairs', 'Last error']} empty={data && hosts.length === 0 && 'No hosts.'}>
        {hosts.map((h) => (
          <tr key={h.id} data-host-id={h.id}>
            <td>
              {h.name} <small className="hint">{h.backend}</small>
              <br />
              <small className="hint">{h.publicAddresses.join(', ')}</small>
            </td>
            <td>
              <span className={`status ${h.agent.online ? 'status-APPLIED' : 'status-PENDING'}`}>{h.agent.online ? 'online' : 'offline'}</span>
              {h.agent.agentVersion && <small className="hint"> {h.agent.agentVersion}</small>}
              {!h.agent.online && h.agent.lastSeenAt && <small className="hint"> last seen {new Date(h.agent.lastSeenAt).toLocaleString()}</small>}
            </td>
            <td>
              {h.agent.appliedRevision ?? '—'} / {h.desiredRevision}
            </td>
            <td>{h.agent.driftRepairs}</td>
            <td>{h.agent.lastError && <span className="status-reason">{h.agent.lastError}</span>}</td>
          </tr>
        ))}
      </DataTable>
      <Pager pages={pages} pageInfo={data?.hosts.pageInfo} label="Hosts" />
      <h2>Pools</h2>
      <table aria-label="Pool utilisation">
        <tbody>
          {pools.map((p) => (
            <tr key={p.id}>
              <th scope="row">
                <Link href="/pools">{p.name}</Link> <small className="hint">{p.subnet}</small>
              </th>
              <td>
                <UtilisationBar name={p.name} utilisation={p.utilisation} />
              </td>
            </tr>
          ))}
          {data && pools.length === 0 && (
            <tr>
              <td>No pools.</td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}
