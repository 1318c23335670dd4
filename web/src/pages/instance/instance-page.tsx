/** An instance with its tabs: Network, Port forwards, Firewall, Bandwidth, Monitoring (Terminal joins when its API lands). */
import { useEffect } from 'react';
import { useQuery } from 'urql';
import { graphql, type ResultOf } from '../../graphql.js';
import { Link } from '../../router.js';
import { BandwidthTab } from './bandwidth-tab.js';
import { FirewallTab } from './firewall-tab.js';
import { MonitoringTab } from './monitoring-tab.js';
import { NetworkTab } from './network-tab.js';
import { PortForwardsTab } from './port-forwards-tab.js';
import { TerminalTab } from './terminal-tab.js';

/** The instance query: everything the tabs show. */
export const InstanceQuery = graphql(`
  query Instance($id: ID!) {
    instance(id: $id) {
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
        name
        network
        mac
        status
        statusError
        addresses {
          id
          address
          cidr
        }
      }
      firewall {
        inboundPolicy
        outboundPolicy
        rules {
          id
          direction
          protocol
          ports {
            start
            end
          }
          sourceCidr
          destinationCidr
          action
          priority
          enabled
          note
          status
          statusError
        }
      }
      bandwidth {
        id
        nicId
        ingressMbps
        egressMbps
        ingressBurstBytes
        egressBurstBytes
        burstAutomatic
        monthlyQuotaBytes
        quotaAction
        throttleMbps
        status
        statusError
      }
    }
  }
`);

/** The loaded instance. */
export type InstanceData = NonNullable<ResultOf<typeof InstanceQuery>['instance']>;

/** Props every tab gets. */
export interface TabProps {
  instance: InstanceData;
  /** Reloads the instance (after a change). */
  refresh(): void;
}

interface Tab {
  slug: string;
  label: string;
  render(props: TabProps): React.ReactNode;
}

// new tabs (Monitoring, Terminal) are one entry each
const TABS: Tab[] = [
  { slug: 'network', label: 'Network', render: (p) => <NetworkTab {...p} /> },
  { slug: 'forwards', label: 'Port forwards', render: (p) => <PortForwardsTab {...p} /> },
  { slug: 'firewall', label: 'Firewall', render: (p) => <FirewallTab {...p} /> },
  { slug: 'bandwidth', label: 'Bandwidth', render: (p) => <BandwidthTab {...p} /> },
  { slug: 'monitoring', label: 'Monitoring', render: (p) => <MonitoringTab {...p} /> },
  { slug: 'terminal', label: 'Terminal', render: (p) => <TerminalTab {...p} /> },
];

// the first time an instance page shows its data after a page load (Navigation Timing; the browser test reads it)
const RENDERED_MARK = 'gatehouse:instance-rendered';

/** The instance page at /instances/:id/:tab. */
export function InstancePage({ id, tab }: { id: string; tab: string | undefined }) {
  const [{ data, fetching, error }, reexecute] = useQuery({ query: InstanceQuery, variables: { id } });
  const instance = data?.instance;
  const current = TABS.find((t) => t.slug === tab) ?? TABS[0]!;
  const loaded = instance !== undefined && instance !== null;
  useEffect(() => {
    if (loaded && performance.getEntriesByName(RENDERED_MARK).length === 0) performance.mark(RENDERED_MARK);
  }, [loaded]);
  if (error) return <p className="form-error">{error.message}</p>;
  if (!instance) return fetching ? <p>Loading…</p> : <p>No instance with id {id} (or it is not yours).</p>;
  const refresh = () => reexecute({ requestPolicy: 'network-only' });
  return (
    <section>
      <p className="breadcrumbs">
        <Link href="/instances">Instances</Link> / {instance.name}
      </p>
      <h1>{instance.name}</h1>
      <p className="hint">
        Host {instance.host.name}
        {instance.owner ? ` · owner ${instance.owner.name}` : ''} · {instance.nics.flatMap((n) => n.addresses.map((a) => a.address)).join(', ') || 'no address'}
      </p>
      <nav aria-label="Instance">
        <ul className="tabs">
          {TABS.map((t) => (
            <li key={t.slug}>
              <Link href={`/instances/${id}/${t.slug}`} aria-current={t === current ? 'page' : undefined}>
                {t.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      {current.render({ instance, refresh })}
    </section>
  );
}
