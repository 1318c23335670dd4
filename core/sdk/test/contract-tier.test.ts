/**
 * The conformance kit's contract tier, without root: the SDK's example plugin passes it, and
 * drivers that break the contract in one way each (an apply that always says it changed
 * something, a gc that ignores the valid ids, a release that fails when the instance is already
 * gone) are caught by the check for that part of the contract.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConflictError, type ApplyResult, type DesiredState, type DriverContext } from '../src/index.js';
import { CONTRACT_CHECKS, contractSuite, runContractTier, type ContractHarness } from '../src/testkit/index.js';
import { JsonFileDriver } from '../examples/json-file-plugin.js';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-contract-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** A harness around a driver over a fresh file, beside a file of someone else's that must never change. */
function harness(make: (path: string) => JsonFileDriver = (path) => new JsonFileDriver({ path })): ContractHarness {
  const sub = join(dir, `case-${++files}`);
  const path = join(sub, 'gatehouse.json');
  return {
    async createDriver() {
      rmSync(sub, { recursive: true, force: true });
      mkdirSync(sub);
      writeFileSync(join(sub, 'foreign.json'), '{"owner":"someone else"}\n');
      return make(path);
    },
    async foreignFingerprint() {
      return readdirSync(sub)
        .filter((name) => name !== 'gatehouse.json')
        .sort()
        .map((name) => `${name}:${readFileSync(join(sub, name), 'utf8')}`)
        .join('\n');
    },
    async cleanup() {
      rmSync(sub, { recursive: true, force: true });
    },
  };
}

contractSuite('json-file example plugin', async () => harness());

/** The results of the checks that failed, by check. */
async function failures(h: ContractHarness): Promise<Map<string, string>> {
  const results = await runContractTier(h);
  expect(results.map((r) => r.check)).toEqual([...CONTRACT_CHECKS]);
  return new Map(results.filter((r) => !r.passed).map((r) => [r.check, r.error ?? '']));
}

describe('the contract tier catches a broken driver', () => {
  it('an apply that always says it changed something fails the idempotency check', async () => {
    class AlwaysChanged extends JsonFileDriver {
      override async apply(ctx: DriverContext, input: { desired: DesiredState }): Promise<ApplyResult> {
        return { ...(await super.apply(ctx, input)), changed: true };
      }
    }
    const failed = await failures(harness((path) => new AlwaysChanged({ path })));
    expect(failed.get(CONTRACT_CHECKS[0])).toBe('a second apply of the same state said changed: true');
    expect(failed.get(CONTRACT_CHECKS[1])).toBe('a second empty apply said changed: true');
    expect(failed.has(CONTRACT_CHECKS[3])).toBe(false);
  });

  it('a gc that ignores the valid ids fails the gc check', async () => {
    class GreedyGc extends JsonFileDriver {
      override async gc(ctx: DriverContext): Promise<{ removedInstanceIds: string[] }> {
        return super.gc(ctx, { validInstanceIds: [] });
      }
    }
    const failed = await failures(harness((path) => new GreedyGc({ path })));
    expect([...failed.keys()]).toEqual([CONTRACT_CHECKS[3]]);
    expect(failed.get(CONTRACT_CHECKS[3])).toMatch(
      /^gc with every valid id removed 00000000-0000-4000-8000-0000000000a1, 00000000-0000-4000-8000-0000000000b1$/,
    );
  });

  it('a release that fails when the instance is already gone fails the release check', async () => {
    class StrictRelease extends JsonFileDriver {
      override async release(ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
        const result = await super.release(ctx, input);
        if (!result.released) throw new ConflictError(`instance ${input.instanceId} is not here`);
        return result;
      }
    }
    const failed = await failures(harness((path) => new StrictRelease({ path })));
    expect([...failed.keys()]).toEqual([CONTRACT_CHECKS[2]]);
    expect(failed.get(CONTRACT_CHECKS[2])).toBe('instance 00000000-0000-4000-8000-0000000000b1 is not here');
  });

  it('a driver whose observe misses a forward fails every check that compares observations', async () => {
    class ForgetfulObserve extends JsonFileDriver {
      override async observe() {
        const { state } = await super.observe();
        return { state: { ...state, forwards: state.forwards.slice(1) } };
      }
    }
    const failed = await failures(harness((path) => new ForgetfulObserve({ path })));
    expect(failed.get(CONTRACT_CHECKS[0])).toMatch(/^after the first apply, observe differs from expectedObservation\(desired\): /);
    expect(failed.has(CONTRACT_CHECKS[4])).toBe(false);
  });
});
