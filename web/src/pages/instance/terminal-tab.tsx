/**
 * The Terminal tab: a web terminal to the instance (xterm.js with the fit add-on). `openTerminal`
 * gives a one-time ticket; the WebSocket to /terminal sends it as its first message (never in the
 * URL); then keystrokes go as bytes and the controller's OpenSSH client answers through the jump
 * server. The instance's host keys the controller learned on first use are shown, with a way to
 * forget them after a reinstall.
 */
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { useQuery } from 'urql';
import { FormError, TextField } from '../../components/form.js';
import { ErrorFields, graphql } from '../../graphql.js';
import { useFormMutation } from '../../use-form-mutation.js';
import type { TabProps } from './instance-page.js';

const HostKeys = graphql(`
  query InstanceSshHostKeys($id: ID!) {
    instance(id: $id) {
      id
      sshHostKeys {
        algorithm
        fingerprint
        learnedAt
      }
    }
  }
`);

const OpenTerminal = graphql(
  `
    mutation OpenTerminal($input: OpenTerminalInput!) {
      openTerminal(input: $input) {
        __typename
        ... on OpenTerminalPayload {
          terminal {
            ticket
            path
          }
        }
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const ForgetHostKeys = graphql(
  `
    mutation ForgetInstanceSshHostKeys($input: ForgetInstanceSshHostKeysInput!) {
      forgetInstanceSshHostKeys(input: $input) {
        __typename
        ...ErrorFields
      }
    }
  `,
  [ErrorFields],
);

const FIELDS = ['username'] as const;
/** Application-level pings keep proxies from closing a quiet terminal. */
const PING_MS = 25_000;

/** xterm.js and its fit add-on, loaded with the tab's first terminal (they would double the app's first download). */
async function loadXterm() {
  const [xterm, fit] = await Promise.all([import('@xterm/xterm'), import('@xterm/addon-fit')]);
  return { Terminal: xterm.Terminal, FitAddon: fit.FitAddon };
}

/** The WebSocket URL of a controller path on the page's own origin. */
function socketUrl(path: string): string {
  const url = new URL(path, location.origin);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

type Status = { state: 'idle' } | { state: 'connecting' } | { state: 'open' } | { state: 'ended'; message: string; failed: boolean };

/** Runs one terminal in `element` over the WebSocket of `ticket`; returns its cleanup. */
function runTerminal(
  xterm: Awaited<ReturnType<typeof loadXterm>>,
  element: HTMLElement,
  ticket: { ticket: string; path: string },
  setStatus: (update: Status | ((s: Status) => Status)) => void,
  onKeysLearned: () => void,
): () => void {
  const term = new xterm.Terminal({ cursorBlink: true, convertEol: false, fontFamily: 'ui-monospace, monospace', fontSize: 14, scrollback: 5000 });
  const fit = new xterm.FitAddon();
  term.loadAddon(fit);
  term.open(element);
  fit.fit();
  term.focus();
  const ws = new WebSocket(socketUrl(ticket.path));
  ws.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  const control = (message: Record<string, unknown>) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(message));
  ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', ticket: ticket.ticket, cols: term.cols, rows: term.rows }));
  ws.onmessage = (event: MessageEvent<ArrayBuffer | string>) => {
    if (typeof event.data !== 'string') return term.write(new Uint8Array(event.data));
    const message = JSON.parse(event.data) as { type: string; message?: string; code?: unknown };
    if (message.type === 'ready') setStatus({ state: 'open' });
    else if (message.type === 'hostKeyLearned') onKeysLearned();
    else if (message.type === 'exit') setStatus({ state: 'ended', message: message.message ?? 'the session ended', failed: message.code !== 0 });
    else if (message.type === 'error') setStatus({ state: 'ended', message: message.message ?? 'refused', failed: true });
  };
  ws.onclose = (event) =>
    setStatus((s) => (s.state === 'ended' ? s : { state: 'ended', message: `the connection closed (${event.code})`, failed: event.code !== 1000 }));
  const typed = term.onData((text) => ws.readyState === WebSocket.OPEN && ws.send(encoder.encode(text)));
  // xterm's binary strings (some mouse reports) are one byte per character
  const binary = term.onBinary((text) => ws.readyState === WebSocket.OPEN && ws.send(Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff)));
  const resized = term.onResize(({ cols, rows }) => control({ type: 'resize', cols, rows }));
  const observer = new ResizeObserver(() => fit.fit());
  observer.observe(element);
  const ping = setInterval(() => control({ type: 'ping' }), PING_MS);
  return () => {
    clearInterval(ping);
    observer.disconnect();
    typed.dispose();
    binary.dispose();
    resized.dispose();
    ws.close();
    term.dispose();
  };
}

/** The Terminal tab. */
export function TerminalTab({ instance }: TabProps) {
  const [username, setUsername] = useState('root');
  const [status, setStatus] = useState<Status>({ state: 'idle' });
  const [ticket, setTicket] = useState<{ ticket: string; path: string } | undefined>();
  const [open, submitOpen] = useFormMutation(OpenTerminal, FIELDS);
  const [forget, submitForget] = useFormMutation(ForgetHostKeys, []);
  const [{ data }, refetchKeys] = useQuery({ query: HostKeys, variables: { id: instance.id } });
  const screen = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const element = screen.current;
    if (!ticket || !element) return;
    let stop: (() => void) | undefined;
    let cancelled = false;
    void loadXterm().then((xterm) => {
      if (!cancelled) stop = runTerminal(xterm, element, ticket, setStatus, () => refetchKeys({ requestPolicy: 'network-only' }));
    });
    return () => {
      cancelled = true;
      stop?.();
    };
  }, [ticket, refetchKeys]);

  const connect = async (event: FormEvent) => {
    event.preventDefault();
    setTicket(undefined);
    const payload = await submitOpen({ input: { instanceId: instance.id, username: username.trim() } });
    if (!payload) return;
    setStatus({ state: 'connecting' });
    setTicket(payload.terminal);
  };

  const forgetKeys = async () => {
    if (await submitForget({ input: { instanceId: instance.id } })) refetchKeys({ requestPolicy: 'network-only' });
  };

  const keys = data?.instance?.sshHostKeys ?? [];
  const running = status.state === 'connecting' || status.state === 'open';
  return (
    <div className="terminal-tab">
      <form onSubmit={connect} className="inline-form" aria-label="Open a terminal">
        <TextField
          label="Log in as"
          name="username"
          errors={open.errors}
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          hint="A user on the instance; you type its password in the terminal."
          autoComplete="off"
        />
        <button type="submit" disabled={open.fetching || running}>
          {running ? 'Connected' : 'Connect'}
        </button>
        {running && (
          <button type="button" onClick={() => setTicket(undefined)}>
            Disconnect
          </button>
        )}
        <FormError errors={open.errors} />
      </form>
      <p role="status" className={status.state === 'ended' && status.failed ? 'form-error' : 'hint'} data-terminal-status={status.state}>
        {status.state === 'connecting' && 'Connecting…'}
        {status.state === 'open' && `Connected to ${instance.name} as ${username}.`}
        {status.state === 'ended' && `Terminal closed: ${status.message}.`}
      </p>
      {ticket && <div ref={screen} className="terminal-screen" data-testid="terminal" style={{ height: '28rem', background: '#000', padding: '4px' }} />}
      <h2>SSH host keys</h2>
      {keys.length === 0 ? (
        <p className="hint">None learned yet: the first terminal records the instance's key, and later ones refuse a different key.</p>
      ) : (
        <>
          <table>
            <thead>
              <tr>
                <th>Type</th>
                <th>Fingerprint</th>
                <th>Learned</th>
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.algorithm}>
                  <td>{k.algorithm}</td>
                  <td>
                    <code>{k.fingerprint}</code>
                  </td>
                  <td>{new Date(k.learnedAt as string).toLocaleString()}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <button type="button" onClick={forgetKeys} disabled={forget.fetching}>
            Forget host keys (after a reinstall)
          </button>
          <FormError errors={forget.errors} />
        </>
      )}
    </div>
  );
}
