/**
 * One controller process for the two-process allocation test (allocation-replicas.test.ts): opens
 * its own store on the PostgreSQL database given in argv[2] (a JSON job) and, on each "go" line on
 * stdin, allocates from one pool with `workers` concurrent requests until the pool is exhausted,
 * then prints one JSON line with what it got. "exit" ends it.
 *
 * Job: { url, workers, quotaNics: string[], freeNics: string[] }. Workers start on the quota
 * owner's NICs (every other worker) and move to an unlimited owner's NIC once QUOTA_EXCEEDED.
 */
import 'reflect-metadata';
import { createInterface } from 'node:readline';
import { PoolExhaustedError, PoolService, QuotaExceededError, createContainer, openStore, systemActor } from '../../src/index.js';

interface Job {
  url: string;
  workers: number;
  quotaNics: string[];
  freeNics: string[];
}

const job = JSON.parse(process.argv[2]!) as Job;
const store = await openStore({ kind: 'postgres', url: job.url, maxConnections: job.workers });
const pools = createContainer(store).resolve(PoolService);
const actor = systemActor(`worker-${process.pid}`);

async function round() {
  const allocated: { nicId: string; address: string }[] = [];
  let quotaRefusals = 0;
  let exhausted = 0;
  await Promise.all(
    Array.from({ length: job.workers }, async (_, w) => {
      let nicId = w % 2 === 0 && job.quotaNics.length > 0 ? job.quotaNics[w % job.quotaNics.length]! : job.freeNics[w % job.freeNics.length]!;
      for (;;) {
        try {
          const row = await pools.allocate(actor, { nicId });
          allocated.push({ nicId, address: row.address });
        } catch (err) {
          if (err instanceof QuotaExceededError) {
            quotaRefusals++;
            nicId = job.freeNics[w % job.freeNics.length]!;
          } else if (err instanceof PoolExhaustedError) {
            exhausted++;
            return;
          } else throw err;
        }
      }
    }),
  );
  return { allocated, quotaRefusals, exhausted };
}

console.log('ready');
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'exit') break;
  if (line === 'go') console.log(JSON.stringify(await round()));
}
await store.close();
