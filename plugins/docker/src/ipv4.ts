/** IPv4 subnet arithmetic for Docker network subnets (addresses are already validated). */

// plain arithmetic: JavaScript's bitwise operators work on signed 32 bits
function toNumber(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function toAddress(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** The subnet an address lies in, in CIDR form: `10.77.0.10`, 24 → `10.77.0.0/24`. */
export function ipv4Subnet(address: string, prefixLength: number): string {
  const size = 2 ** (32 - prefixLength);
  return `${toAddress(Math.floor(toNumber(address) / size) * size)}/${prefixLength}`;
}

/** Whether an IPv4 address lies in a CIDR subnet. */
export function ipv4InSubnet(address: string, subnet: string): boolean {
  const [base, length] = subnet.split('/');
  const size = 2 ** (32 - Number(length ?? 32));
  return Math.floor(toNumber(address) / size) === Math.floor(toNumber(base!) / size);
}
