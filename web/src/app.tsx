/** The panel's frame: navigation, the signed-in user, and the page of the current route. */
import { useMutation, useQuery } from 'urql';
import { graphql } from './graphql.js';
import { Link, matchPath, useLocation } from './router.js';
import { useSession } from './session.js';
import { InstancePage } from './pages/instance/instance-page.js';
import { InstancesPage } from './pages/instances.js';
import { LiveStatusProvider } from './live-status.js';
import { SignInPage } from './pages/sign-in.js';
import { WebProxiesPage } from './pages/web-proxies.js';
import { AccountPage } from './pages/account.js';
import { AdminPage } from './pages/admin.js';
import { AuditLogPage } from './pages/audit-log.js';
import { IpPoolsPage } from './pages/ip-pools.js';
import { OverviewPage } from './pages/overview.js';

const SignOutMutation = graphql(`
  mutation SignOut {
    signOut {
      __typename
      ... on Error {
        message
      }
    }
  }
`);

const MeQuery = graphql(`
  query Me {
    me {
      id
      name
      role
    }
  }
`);

/** One entry of the navigation. */
interface NavItem {
  href: string;
  label: string;
  adminOnly?: boolean;
}

const NAV: NavItem[] = [
  { href: '/overview', label: 'Overview', adminOnly: true },
  { href: '/instances', label: 'Instances' },
  { href: '/proxies', label: 'Web proxies' },
  { href: '/pools', label: 'IP pools', adminOnly: true },
  { href: '/audit', label: 'Audit log' },
  { href: '/admin', label: 'Admin', adminOnly: true },
  { href: '/account', label: 'Account' },
];

/** The route table: the first pattern that matches renders. */
function Page({ path, isAdmin }: { path: string; isAdmin: boolean }) {
  if (path === '/' || matchPath('/instances', path)) return <InstancesPage isAdmin={isAdmin} />;
  if (matchPath('/proxies', path)) return <WebProxiesPage />;
  if (matchPath('/audit', path)) return <AuditLogPage />;
  if (matchPath('/account', path)) return <AccountPage isAdmin={isAdmin} />;
  if (isAdmin && matchPath('/overview', path)) return <OverviewPage />;
  if (isAdmin && matchPath('/pools', path)) return <IpPoolsPage />;
  if (isAdmin && matchPath('/admin', path)) return <AdminPage />;
  const instance = matchPath('/instances/:id/:tab?', path);
  if (instance) return <InstancePage id={instance.id!} tab={instance.tab} />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing lives at <code>{path}</code>. <Link href="/instances">Go to the instances</Link>.
      </p>
    </section>
  );
}

/** The whole app: the sign-in page until there is a session, then the panel. */
export function App() {
  const session = useSession();
  const { path } = useLocation();
  const [me] = useQuery({ query: MeQuery, pause: !session.token });
  const [, signOut] = useMutation(SignOutMutation);
  if (!session.token) return <SignInPage />;
  const user = me.data?.me;
  const isAdmin = user?.role === 'ADMIN';
  return (
    <LiveStatusProvider>
      <div className="shell">
        <a className="skip-link" href="#main">
          Skip to content
        </a>
        <header className="topbar">
          <span className="brand">Gatehouse</span>
          <nav aria-label="Main">
            <ul>
              {NAV.filter((item) => !item.adminOnly || isAdmin).map((item) => (
                <li key={item.href}>
                  <Link href={item.href} aria-current={path.startsWith(item.href) ? 'page' : undefined}>
                    {item.label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
          <div className="whoami">
            {user && (
              <span>
                {user.name} <small>({user.role.toLowerCase()})</small>
              </span>
            )}
            <button
              type="button"
              onClick={async () => {
                // the session ends here even when the controller cannot be reached
                await signOut({}).catch(() => undefined);
                session.end();
              }}
            >
              Sign out
            </button>
          </div>
        </header>
        <main id="main" tabIndex={-1}>
          {me.error && <p className="form-error">{me.error.message}</p>}
          <Page path={path} isAdmin={isAdmin} />
        </main>
      </div>
    </LiveStatusProvider>
  );
}
