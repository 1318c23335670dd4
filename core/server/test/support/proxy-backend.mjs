// A web backend for reverse-proxy tests, run inside a test's network namespace: on every address,
// HTTP on 8080 and HTTPS on 8443 answer with the address they were reached on and the forwarding
// headers they saw; 8081 echoes WebSocket messages. Usage: node proxy-backend.mjs CERT_FILE KEY_FILE
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { WebSocketServer } from 'ws';

const [certFile, keyFile] = process.argv.slice(2);
const answer = (req, res) => {
  let received = 0;
  req.on('data', (d) => (received += d.length));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        local: req.socket.localAddress.replace(/^::ffff:/, ''),
        tls: Boolean(req.socket.encrypted),
        host: req.headers.host,
        xff: req.headers['x-forwarded-for'],
        proto: req.headers['x-forwarded-proto'],
        xhost: req.headers['x-forwarded-host'],
        received,
      }),
    );
  });
};
let pending = 3;
const ready = () => --pending === 0 && process.stdout.write('ready\n');
createServer(answer).listen({ port: 8080, ipv6Only: false }, ready);
createTlsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, answer).listen({ port: 8443, ipv6Only: false }, ready);
new WebSocketServer({ port: 8081 }, ready).on('connection', (socket, req) =>
  socket.on('message', (data) => socket.send(`echo:${String(data)} via ${req.socket.localAddress.replace(/^::ffff:/, '')}`)),
);
