/** The dry-run plan of a CSV import, row by row, with the reason of every row that would not be created. */

/** One planned row as the controller returns it. */
export interface PlanRow {
  row: number;
  action: 'CREATE' | 'UNCHANGED' | 'CONFLICT' | 'INVALID';
  column?: string | null;
  reason?: string | null;
  portForward?: { hostPorts: { start: number; end: number }; protocol: string; targetAddress: string; targetPorts: { start: number; end: number } } | null;
}

const ACTION_TEXT: Record<PlanRow['action'], string> = {
  CREATE: 'will be created',
  UNCHANGED: 'exists already (unchanged)',
  CONFLICT: 'conflicts',
  INVALID: 'is invalid',
};

const ACTION_CLASS: Record<PlanRow['action'], string> = { CREATE: 'plan-create', UNCHANGED: 'plan-skip', CONFLICT: 'plan-error', INVALID: 'plan-error' };

function ports(range: { start: number; end: number }): string {
  return range.start === range.end ? String(range.start) : `${range.start}-${range.end}`;
}

/** Counts of the plan, as the sentence above its table. */
export function planSummary(rows: readonly PlanRow[]): string {
  const count = (action: PlanRow['action']) => rows.filter((r) => r.action === action).length;
  return `${rows.length} rows: ${count('CREATE')} to create, ${count('UNCHANGED')} unchanged, ${count('CONFLICT')} conflicting, ${count('INVALID')} invalid`;
}

/** The plan table. */
export function CsvPlan({ rows }: { rows: readonly PlanRow[] }) {
  return (
    <div className="table-wrap">
      <p role="status">{planSummary(rows)}</p>
      <table aria-label="Import plan">
        <thead>
          <tr>
            <th scope="col">Row</th>
            <th scope="col">Outcome</th>
            <th scope="col">Forward</th>
            <th scope="col">Reason</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.row} className={ACTION_CLASS[r.action]}>
              <td>{r.row}</td>
              <td>{ACTION_TEXT[r.action]}</td>
              <td>
                {r.portForward
                  ? `${r.portForward.protocol.toLowerCase()} ${ports(r.portForward.hostPorts)} → ${r.portForward.targetAddress}:${ports(r.portForward.targetPorts)}`
                  : '—'}
              </td>
              <td>{r.reason ? `${r.column ? `${r.column}: ` : ''}${r.reason}` : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
