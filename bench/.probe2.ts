import 'reflect-metadata';
import { openStore } from '../core/server/src/db/database.js';
import { auditLog } from '../core/server/src/db/schema.js';
import { newId } from '../core/server/src/ids.js';
const store = await openStore({ kind: 'pglite' });
const ids = Array.from({ length: 50000 }, () => newId());
const base = { at: new Date(), requestId: 'x', actorUserId: null, tokenId: null, action: 'a', objectType: 'o', objectId: 'i', ownerId: null, before: null };
for (let round = 0; round < 3; round++) {
  let t = performance.now();
  await store.db.insert(auditLog).values({ ...base, id: newId(), after: { forwardIds: ids } });
  const a = performance.now() - t;
  t = performance.now();
  await store.db.insert(auditLog).values({ ...base, id: newId(), after: { forwardIds: ids.join(' ') } });
  const b = performance.now() - t;
  t = performance.now();
  JSON.parse(JSON.stringify({ forwardIds: ids }));
  const c = performance.now() - t;
  console.log(`array ${a.toFixed(1)} ms, one string ${b.toFixed(1)} ms, toJson ${c.toFixed(1)} ms`);
}
process.exit(0);
