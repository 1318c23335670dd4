/** Bulk seeding for scale tests and benches: many objects in one statement, not one API call each. */
import { sql } from 'drizzle-orm';
import { systemActor, type Actor } from '../auth/actor.js';
import { rowsOf, type Store } from '../db/database.js';
import { createContainer } from '../server.js';
import { HostService } from '../services/host-service.js';
import { InstanceService } from '../services/instance-service.js';
import { PoolService } from '../services/pool-service.js';
import { PortForwardService } from '../services/port-forward-service.js';

/** What `seedForwards` made. */
export interface SeededForwards {
  container: ReturnType<typeof createContainer>;
  actor: Actor;
  hostId: string;
  instanceId: string;
  /** The forwards' ids, host ports 2000, 2001, … in order. */
  forwardIds: string[];
  /** The host's desired revision once they are in. */
  revision: number;
}

/**
 * A Linux host `h-<label>` with one instance `vm-0` on `network` (pool `p-<label>`, `cidr`) and
 * `count` TCP forwards to its port 22 on host ports 2000 onwards: the first through the service,
 * the rest copied from it in one statement. `beforeCopies` runs between the two (to set up the
 * store's statistics, say).
 */
export async function seedForwards(
  store: Store,
  options: { label: string; network: string; cidr: string; count: number; beforeCopies?: () => Promise<void> },
): Promise<SeededForwards> {
  const container = createContainer(store);
  const actor = systemActor('seed');
  await store.db.execute(sql`insert into users (id, name, role) values (${actor.userId}, 'seed-system', 'admin') on conflict do nothing`);
  const host = await container.resolve(HostService).create(actor, { name: `h-${options.label}`, backend: 'linux', portRangeStart: 1024, portRangeEnd: 65535 });
  await container.resolve(PoolService).create(actor, { name: `p-${options.label}`, kind: 'private', network: options.network, cidr: options.cidr });
  const vm = await container.resolve(InstanceService).create(actor, { hostId: host.id, name: 'vm-0', nics: [{ network: options.network }] });
  const first = await container.resolve(PortForwardService).create(actor, { instanceId: vm.id, protocol: 'tcp', hostPort: '2000', targetPort: '22' });
  await options.beforeCopies?.();
  const copies = await store.db.execute(sql`
    insert into port_forwards (id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end, target_address_id,
      target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi)
    select gen_random_uuid(), host_id, instance_id, owner_id, protocol, host_address, 2000 + g, 2000 + g, target_address_id,
      target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi
    from port_forwards, generate_series(1, ${options.count - 1}::int) as g where id = ${first.id}::uuid
    order by g
    returning id`);
  const [{ revision }] = rowsOf<{ revision: number }>(
    await store.db.execute(sql`select desired_revision::int as revision from hosts where id = ${host.id}::uuid`),
  ) as [{ revision: number }];
  return { container, actor, hostId: host.id, instanceId: vm.id, forwardIds: [first.id, ...rowsOf<{ id: string }>(copies).map((r) => r.id)], revision };
}
