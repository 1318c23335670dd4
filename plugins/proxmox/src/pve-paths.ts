/**
 * Every PVE API call the plugin makes (method and schema path), so the test server's schema test
 * covers exactly what the plugin depends on, and the README's privilege list stays honest.
 */
export const PVE_CALLS = [
  ['GET', '/version'],
  ['GET', '/cluster/resources'],
  ['GET', '/nodes/{node}/qemu/{vmid}/config'],
  ['POST', '/nodes/{node}/qemu/{vmid}/config'],
  ['GET', '/nodes/{node}/qemu/{vmid}/pending'],
  ['GET', '/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces'],
  ['GET', '/nodes/{node}/lxc/{vmid}/config'],
  ['PUT', '/nodes/{node}/lxc/{vmid}/config'],
  ['GET', '/nodes/{node}/lxc/{vmid}/pending'],
  ['GET', '/nodes/{node}/lxc/{vmid}/interfaces'],
  ['GET', '/nodes/{node}/tasks/{upid}/status'],
] as const;
