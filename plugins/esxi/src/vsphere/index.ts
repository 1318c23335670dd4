/** The vSphere SOAP client of the ESXi plugin. */
export {
  VsphereClient,
  moRef,
  normalizeThumbprint,
  ref,
  type MoRef,
  type NicChange,
  type NicModel,
  type ObjectContent,
  type PortGroupSpec,
  type ServiceContent,
  type ShapingPolicy,
  type VsphereEndpoint,
} from './client.js';
export { VsphereFault, VsphereTlsError, VsphereTransportError, toSdkError, type KnownFaultType } from './faults.js';
export { child, childText, children, parseXml, type XmlElement } from './xml.js';
