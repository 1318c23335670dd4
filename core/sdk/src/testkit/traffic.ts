/**
 * Real traffic between lab namespaces: small TCP and UDP servers that answer with a fixed text,
 * and clients that tell what happened — an answer, a refusal (RST or ICMP unreachable), or
 * silence (dropped). Everything runs as `node -e` inside a namespace, started with an argument
 * array and stopped by its own PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { LabNamespace } from './lab.js';

/** What a client saw: `got:<answer>`, `refused` or `timeout`. */
export type Outcome = `got:${string}` | 'refused' | 'timeout' | `error:${string}`;

/** A server process in a namespace. */
export interface LabServer {
  readonly process: ChildProcess;
  stop(): void;
}

/** Starts a TCP server on `port` (all addresses) that answers every connection with `reply`. */
export function tcpServer(ns: LabNamespace, port: number, reply: string): LabServer {
  const code = `require('net').createServer(c=>{c.on('error',()=>{});c.end(${JSON.stringify(reply)})}).listen({port:${port},ipv6Only:false})`;
  return background(ns, code);
}

/** Starts a UDP server on `port` (IPv4 and IPv6) that answers every datagram with `reply`. */
export function udpServer(ns: LabNamespace, port: number, reply: string): LabServer {
  const code = `const d=require('dgram');for(const t of ['udp4','udp6']){const s=d.createSocket({type:t,ipv6Only:t==='udp6'});s.on('message',(m,r)=>s.send(${JSON.stringify(reply)},r.port,r.address));s.bind(${port})}`;
  return background(ns, code);
}

function background(ns: LabNamespace, code: string): LabServer {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', code], { stdio: 'ignore' });
  return {
    process: child,
    stop: () => {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGTERM');
    },
  };
}

/** Connects by TCP from `from` to host:port and reads until the server closes. */
export async function tcpOutcome(from: LabNamespace, host: string, port: number, timeoutMs = 800): Promise<Outcome> {
  const code = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port},timeout:${timeoutMs}});let d='';s.on('data',b=>d+=b);s.on('end',()=>console.log('got:'+d));s.on('timeout',()=>{console.log('timeout');s.destroy()});s.on('error',e=>console.log(e.code==='ECONNREFUSED'||e.code==='EHOSTUNREACH'||e.code==='ECONNRESET'?'refused':'error:'+e.code))`;
  return (await from.exec(process.execPath, ['-e', code])).trim() as Outcome;
}

/** Sends one UDP datagram from `from` to host:port and waits for an answer. */
export async function udpOutcome(from: LabNamespace, host: string, port: number, timeoutMs = 800): Promise<Outcome> {
  const type = host.includes(':') ? 'udp6' : 'udp4';
  const code = `const s=require('dgram').createSocket('${type}');const t=setTimeout(()=>{console.log('timeout');s.close()},${timeoutMs});s.on('message',m=>{clearTimeout(t);console.log('got:'+m);s.close()});s.on('error',e=>{clearTimeout(t);console.log(e.code==='ECONNREFUSED'?'refused':'error:'+e.code);s.close()});s.connect(${port},${JSON.stringify(host)},()=>s.send('ping'))`;
  return (await from.exec(process.execPath, ['-e', code])).trim() as Outcome;
}

/** Polls until `probe` answers `got:...` or `ms` pass; returns the last outcome. */
export async function eventually(probe: () => Promise<Outcome>, ms = 5000): Promise<Outcome> {
  const until = Date.now() + ms;
  let last = await probe();
  while (!last.startsWith('got:') && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    last = await probe();
  }
  return last;
}

/** Clients connecting in loops until stopped (`tcpConnectLoop`). */
export interface ConnectLoop {
  /** Lets each loop finish its current connection, then returns how many of each outcome were seen. */
  stop(): Promise<Record<string, number>>;
  /** Kills the client process (cleanup after a failure). */
  kill(): void;
}

/**
 * Opens TCP connections from `from` to host:port one after the other in `parallel` loops until
 * stopped, each read until the server closes, and counts the outcomes (`got:<answer>`, `refused`,
 * `timeout`, `error:<code>`): for tests that change a rule while traffic flows.
 */
export function tcpConnectLoop(from: LabNamespace, host: string, port: number, parallel = 4, timeoutMs = 2000): ConnectLoop {
  const code = `const net=require('net');let stop=false;const c={};process.stdin.on('end',()=>{stop=true});process.stdin.resume();
const one=()=>new Promise(r=>{const s=net.connect({host:${JSON.stringify(host)},port:${port},timeout:${timeoutMs}});let d='';s.on('data',b=>d+=b);s.on('end',()=>r('got:'+d));s.on('timeout',()=>{s.destroy();r('timeout')});s.on('error',e=>r(e.code==='ECONNREFUSED'||e.code==='ECONNRESET'||e.code==='EHOSTUNREACH'?'refused':'error:'+e.code))});
const loop=async()=>{while(!stop){const o=await one();c[o]=(c[o]||0)+1}};
Promise.all(Array.from({length:${parallel}},loop)).then(()=>console.log(JSON.stringify(c)));`;
  const child = spawn('ip', ['netns', 'exec', from.name, process.execPath, '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  const done = new Promise<Record<string, number>>((resolve, reject) => {
    child.on('exit', () => (out.trim() ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error('the client loop printed nothing'))));
  });
  return {
    stop: () => {
      child.stdin!.end();
      return done;
    },
    kill: () => {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    },
  };
}

/** What `tcpConnectRate` saw: outcome counts and how long the connections took to start. */
export interface ConnectRateResult {
  counts: Record<string, number>;
  /** Seconds from the first connection's start to the last one's. */
  seconds: number;
}

/**
 * Starts `rate` TCP connections per second from `from` to host:port for `seconds`, paced by the
 * clock rather than by answers (so a limit that drops connections does not slow the client), each
 * waiting at most `timeoutMs` (below the SYN retransmission time, so a dropped connection is not
 * retried), optionally from `localAddress`; counts the outcomes as `tcpConnectLoop` does.
 */
export async function tcpConnectRate(
  from: LabNamespace,
  host: string,
  port: number,
  options: { rate: number; seconds: number; localAddress?: string; timeoutMs?: number },
): Promise<ConnectRateResult> {
  const code = `const net=require('net');const total=${Math.round(options.rate * options.seconds)};const c={};let n=0,done=0,last=0;const start=Date.now();
const finish=k=>{c[k]=(c[k]||0)+1;if(++done===total)console.log(JSON.stringify({counts:c,seconds:(last-start)/1000}))};
const one=()=>{const s=net.connect({host:${JSON.stringify(host)},port:${port},timeout:${options.timeoutMs ?? 500}${options.localAddress ? `,localAddress:${JSON.stringify(options.localAddress)}` : ''}});let d='';
s.on('data',b=>d+=b);s.on('end',()=>finish('got:'+d));s.on('timeout',()=>{s.destroy();finish('timeout')});s.on('error',e=>finish(e.code==='ECONNREFUSED'||e.code==='ECONNRESET'||e.code==='EHOSTUNREACH'?'refused':'error:'+e.code))};
const t=setInterval(()=>{const due=Math.min(total,Math.floor((Date.now()-start)*${options.rate}/1000)+1);while(n<due){n++;last=Date.now();one()}if(n>=total)clearInterval(t)},1);`;
  return JSON.parse((await from.exec(process.execPath, ['-e', code])).trim()) as ConnectRateResult;
}
