/**
 * The controller's own addresses, which no user-made object may send traffic to or hand out: a
 * forward, web proxy or CSV row targeting one, a NIC address that is one, or a pool covering one
 * is refused. Loopback and unspecified addresses count, and every address of this machine's
 * interfaces, read at each check (interfaces come and go).
 */
import { networkInterfaces } from 'node:os';
import { ValidationError } from '../support/errors.js';
import { parseIp, type IpAddress, type IpFamily } from './ip.js';

const LOOPBACK_V4 = { start: 0x7f000000n, end: 0x7fffffffn };

/** The addresses of this machine's interfaces, parsed (link-local scopes dropped). */
function interfaceAddresses(): IpAddress[] {
  const out: IpAddress[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      const parsed = parseIp(i.address.replace(/%.*$/, ''));
      if (!('error' in parsed)) out.push(parsed);
    }
  }
  return out;
}

/** Whether an address is loopback, unspecified, or one of this machine's (the controller's). */
export function isControllerAddress(address: string | IpAddress): boolean {
  return controllerAddressCheck()(address);
}

/** `isControllerAddress` for many addresses: the machine's interfaces are read once, when this is called. */
export function controllerAddressCheck(): (address: string | IpAddress) => boolean {
  const own = new Set(interfaceAddresses().map((a) => `${a.family}/${a.value}`));
  return (address) => {
    const addr = typeof address === 'string' ? parseIp(address) : address;
    if ('error' in addr) return false;
    if (addr.value === 0n || (addr.family === 6 && addr.value === 1n)) return true;
    if (addr.family === 4 && addr.value >= LOOPBACK_V4.start && addr.value <= LOOPBACK_V4.end) return true;
    return own.has(`${addr.family}/${addr.value}`);
  };
}

/** Refuses a target that is the controller's, naming the field. */
export function refuseControllerTarget(field: string, address: string): void {
  if (isControllerAddress(address)) {
    throw new ValidationError(field, address, 'is an address of the controller itself; traffic may only be sent to instances');
  }
}

/** The controller addresses inside [start, end] of a family (a pool may not hand one out). */
export function controllerAddressesIn(family: IpFamily, start: bigint, end: bigint): IpAddress[] {
  const candidates: IpAddress[] = [...interfaceAddresses()];
  if (family === 4 && start <= LOOPBACK_V4.end && LOOPBACK_V4.start <= end)
    candidates.push({ family: 4, value: start > LOOPBACK_V4.start ? start : LOOPBACK_V4.start });
  return candidates.filter((a) => a.family === family && a.value >= start && a.value <= end);
}
