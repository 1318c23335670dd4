/**
 * Desired-state patches: applying diff(a, b) to a gives exactly b, for random pairs of documents;
 * bad patches are refused naming the field; a patched document is trusted without a second check.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DriverConfigError, validateDesiredState, type DesiredInstance, type DesiredPortForward, type DesiredState } from '@gatehouse/sdk';
import { applyDesiredStatePatch, compareForwards, diffDesiredState, patchIsEmpty } from '../src/index.js';

const HOST = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a01';
const id = (kind: number, n: number) => `${kind}0000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

const forwardArb = (n: number): fc.Arbitrary<DesiredPortForward> =>
  fc.record({
    id: fc.constant(id(1, n)),
    protocol: fc.constantFrom('tcp' as const, 'udp' as const, 'both' as const),
    hostAddress: fc.constantFrom(null, '198.51.100.1'),
    hostPorts: fc.integer({ min: 1, max: 60 }).map((p) => ({ start: 1000 + p, end: 1000 + p })),
    targetAddress: fc.constantFrom('10.0.0.2', '10.0.0.3'),
    targetPorts: fc.constantFrom({ start: 80, end: 80 }, { start: 443, end: 443 }),
    sourceCidrs: fc.constantFrom([], ['192.0.2.0/24'], ['192.0.2.0/24', '203.0.113.0/24']),
  });

const instanceArb = (n: number): fc.Arbitrary<Omit<DesiredInstance, 'portForwards'>> =>
  fc.record({
    id: fc.constant(id(2, n)),
    name: fc.constantFrom(`vm${n}`, `renamed${n}`),
    externalId: fc.constantFrom(null, `ns${n}`),
    nics: fc.constantFrom([], [{ id: id(3, n), name: 'eth0', mac: '02:00:00:00:00:01', network: 'br0', addresses: [] }]),
    firewall: fc.constantFrom(
      { inboundPolicy: 'allow' as const, outboundPolicy: 'allow' as const, rules: [] },
      {
        inboundPolicy: 'drop' as const,
        outboundPolicy: 'allow' as const,
        rules: [
          {
            id: id(4, n),
            direction: 'inbound' as const,
            protocol: 'tcp' as const,
            sourceCidr: null,
            destinationCidr: null,
            ports: [{ start: 22, end: 22 }],
            action: 'allow' as const,
            priority: 1,
          },
        ],
      },
    ),
    bandwidth: fc.constant([]),
  });

const FORWARDS = 40;

/**
 * A document with some of 4 instances and some of 40 forwards spread over them, in the
 * controller's order; forward n is `base[n]`, or now and then its variant `alt[n]` — so two
 * documents drawn with the same base share most forwards, as consecutive revisions do.
 */
const documentArb = (revision: number, base: DesiredPortForward[], alt: DesiredPortForward[]): fc.Arbitrary<DesiredState> =>
  fc
    .tuple(
      fc.subarray([0, 1, 2, 3], { minLength: 1 }).chain((ns) => fc.tuple(...ns.map(instanceArb))),
      fc.tuple(
        ...base.map((_, n) => fc.option(fc.tuple(fc.constantFrom(base[n]!, base[n]!, base[n]!, alt[n]!), fc.constantFrom(0, 0, 0, 1, 2, 3)), { freq: 4 })),
      ),
      fc.constantFrom<string[][]>(['198.51.100.1'], ['198.51.100.1', '2001:db8::1']),
    )
    .map(([headers, forwards, publicAddresses]): DesiredState => ({
      apiVersion: 1 as const,
      hostId: HOST,
      hostName: 'hv-1',
      revision,
      publicAddresses,
      instances: headers
        .map((h, k) => ({
          ...h,
          portForwards: forwards
            .filter((f): f is [DesiredPortForward, 0 | 1 | 2 | 3] => f !== null && f[1] % headers.length === k)
            .map(([f]) => f)
            .sort(compareForwards),
        }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
    }));

/** Three revisions of one host's document. */
const revisionsArb = fc
  .tuple(fc.tuple(...Array.from({ length: FORWARDS }, (_, n) => forwardArb(n))), fc.tuple(...Array.from({ length: FORWARDS }, (_, n) => forwardArb(n))))
  .chain(([base, alt]) => fc.tuple(documentArb(5, base, alt), documentArb(9, base, alt), documentArb(12, base, alt)));

describe('desired-state patches', () => {
  it('turn any document into any other exactly, in the same order', () => {
    fc.assert(
      fc.property(revisionsArb, ([a, b]) => {
        const patch = diffDesiredState(a, b);
        const { state, changed } = applyDesiredStatePatch(validateDesiredState(a), JSON.parse(JSON.stringify(patch)));
        expect(state).toEqual(b);
        // every forward that differs is reported changed; the ones that stayed the same are not
        const before = new Map(a.instances.flatMap((i) => i.portForwards.map((f) => [f.id, JSON.stringify([i.id, f])])));
        for (const i of b.instances) {
          for (const f of i.portForwards) expect(changed.has(f.id)).toBe(before.get(f.id) !== JSON.stringify([i.id, f]));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('apply one after another, each to the document the last one made, and again to a base already patched or refused half-way', () => {
    fc.assert(
      fc.property(revisionsArb, ([a, b, c]) => {
        const wire = (p: unknown) => JSON.parse(JSON.stringify(p)) as unknown;
        const base = validateDesiredState(a);
        const first = applyDesiredStatePatch(base, wire(diffDesiredState(a, b))).state;
        // refused at its last forward (an unknown instance), after the others were folded in
        const toC = diffDesiredState(b, c);
        const some = [...b.instances, ...c.instances].flatMap((i) => i.portForwards)[0];
        if (some) {
          const bad = { ...toC, portForwards: [...toC.portForwards, { instanceId: id(2, 9), forward: some }] };
          expect(() => applyDesiredStatePatch(first, wire(bad))).toThrow(DriverConfigError);
        }
        const second = applyDesiredStatePatch(first, wire(toC)).state;
        expect(second).toEqual(c);
        expect(applyDesiredStatePatch(second, wire(diffDesiredState(c, { ...b, revision: 13 }))).state).toEqual({ ...b, revision: 13 });
        // the first base once more (its forward index went to the document made from it)
        expect(applyDesiredStatePatch(base, wire(diffDesiredState(a, c))).state).toEqual(c);
      }),
      { numRuns: 300 },
    );
  });

  it('are small: one new forward among 60,000 is one element', () => {
    const forwards = Array.from({ length: 60_000 }, (_, n) => ({
      id: id(1, n),
      protocol: 'tcp' as const,
      hostAddress: null,
      hostPorts: { start: 2000 + n, end: 2000 + n },
      targetAddress: '10.0.0.2',
      targetPorts: { start: 80, end: 80 },
      sourceCidrs: [],
    }));
    const instance = {
      id: id(2, 1),
      name: 'vm1',
      externalId: null,
      nics: [],
      firewall: { inboundPolicy: 'allow' as const, outboundPolicy: 'allow' as const, rules: [] },
      bandwidth: [],
    };
    const a: DesiredState = {
      apiVersion: 1,
      hostId: HOST,
      hostName: 'hv-1',
      revision: 1,
      publicAddresses: ['198.51.100.1'],
      instances: [{ ...instance, portForwards: forwards }],
    };
    const added = { ...forwards[0]!, id: id(1, 99_999), hostPorts: { start: 62_500, end: 62_500 } };
    const b: DesiredState = { ...a, revision: 2, instances: [{ ...instance, portForwards: [...forwards, added] }] };
    const patch = diffDesiredState(a, b);
    expect(patch).toMatchObject({
      baseRevision: 1,
      revision: 2,
      instances: [],
      removedInstances: [],
      removedPortForwards: [],
      portForwards: [{ instanceId: instance.id, forward: added }],
    });
    expect(JSON.stringify(patch).length).toBeLessThan(500);
    const { state, changed } = applyDesiredStatePatch(validateDesiredState(a), patch);
    expect([...changed]).toEqual([added.id]);
    expect(state.instances[0]!.portForwards.at(-1)).toEqual(added);
    expect(patchIsEmpty(diffDesiredState(state, { ...state, revision: 3 }))).toBe(true);
  });

  it('refuse a patch for another revision, a malformed forward and an unknown instance, naming the field', () => {
    const a: DesiredState = { apiVersion: 1, hostId: HOST, hostName: 'hv-1', revision: 4, publicAddresses: [], instances: [] };
    const patch = { baseRevision: 4, revision: 5, instances: [], removedInstances: [], portForwards: [], removedPortForwards: [] };
    const refusal = (p: unknown) => {
      try {
        applyDesiredStatePatch(a, p);
      } catch (err) {
        expect(err).toBeInstanceOf(DriverConfigError);
        return (err as DriverConfigError).path;
      }
      throw new Error('applied');
    };
    expect(refusal({ ...patch, baseRevision: 3 })).toBe('patch.baseRevision');
    expect(refusal({ ...patch, revision: 4 })).toBe('patch.revision');
    expect(refusal({ ...patch, removedPortForwards: 'x' })).toBe('patch.removedPortForwards');
    const forward = {
      id: id(1, 1),
      protocol: 'tcp',
      hostAddress: null,
      hostPorts: { start: 1, end: 70_000 },
      targetAddress: '10.0.0.2',
      targetPorts: { start: 1, end: 1 },
      sourceCidrs: [],
    };
    expect(refusal({ ...patch, portForwards: [{ instanceId: id(2, 1), forward }] })).toBe('patch.portForwards[0].forward.hostPorts.end');
    expect(refusal({ ...patch, portForwards: [{ instanceId: id(2, 1), forward: { ...forward, hostPorts: { start: 1, end: 1 } } }] })).toBe(
      'patch.portForwards[0].instanceId',
    );
    expect(
      refusal({
        ...patch,
        instances: [
          { id: id(2, 1), name: '', externalId: null, nics: [], firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] }, bandwidth: [] },
        ],
      }),
    ).toBe('patch.instances[0].name');
  });
});
