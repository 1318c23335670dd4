// Preloaded (node --import) into a process by postgres-write-defect.test.ts: on SIGUSR2,
// makes postgres.js' own connection code write on a connection that has no socket, the defect of
// porsager/postgres#1154: its deferred nextWrite throws from a timer, outside any caller.
// the copy the controller imports (postgres' ESM entry, src/index.js) has its connection beside it
const { default: Connection } = await import(new URL('./connection.js', import.meta.resolve('postgres')).href);
process.on('SIGUSR2', () => {
  const connection = Connection({ host: ['127.0.0.1'], port: [1], max_pipeline: 100, idle_timeout: 0, max_lifetime: 0, connect_timeout: 1 });
  try {
    // a query the connection cannot build: it answers with a Sync written to its (absent) socket
    connection.execute({ options: {}, strings: null, args: [], reject() {}, resolve() {} });
  } catch {
    // the build error itself is the query's; the defect is the deferred write
  }
  console.log('[defect] postgres.js deferred write on a closed connection scheduled');
});
