/** The CSV import plan shows every row with its outcome, the planned forward, and the reason of a row that would not be created. */
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import { CsvPlan, planSummary, type PlanRow } from '../src/components/csv-plan.js';

const rows: PlanRow[] = [
  {
    row: 2,
    action: 'CREATE',
    portForward: { protocol: 'TCP', hostPorts: { start: 8000, end: 8010 }, targetAddress: '10.0.0.5', targetPorts: { start: 8000, end: 8010 } },
  },
  { row: 3, action: 'INVALID', column: 'host_port', reason: '"99999" must be an integer from 1 to 65535' },
  {
    row: 4,
    action: 'UNCHANGED',
    portForward: { protocol: 'UDP', hostPorts: { start: 5353, end: 5353 }, targetAddress: '10.0.0.6', targetPorts: { start: 53, end: 53 } },
  },
];

describe('the CSV plan', () => {
  it('counts the outcomes', () => {
    expect(planSummary(rows)).toBe('3 rows: 1 to create, 1 unchanged, 0 conflicting, 1 invalid');
  });

  it('renders one table row per CSV row with the forward or the reason', () => {
    const html = renderToStaticMarkup(<CsvPlan rows={rows} />);
    const bodyRows = html.split('<tbody>')[1]!.split('<tr').slice(1);
    expect(bodyRows).toHaveLength(3);
    expect(bodyRows[0]).toContain('will be created');
    expect(bodyRows[0]).toContain('tcp 8000-8010 → 10.0.0.5:8000-8010');
    expect(bodyRows[1]).toContain('plan-error');
    expect(bodyRows[1]).toContain('host_port: &quot;99999&quot; must be an integer from 1 to 65535');
    expect(bodyRows[2]).toContain('udp 5353 → 10.0.0.6:53');
  });
});
