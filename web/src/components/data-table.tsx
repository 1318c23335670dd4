/** The panel's list table: a labelled table in a horizontally scrolling frame, with column headers and an unlabelled actions column. */
import type { ReactNode } from 'react';

/**
 * `label` names the table for assistive technology (and the browser tests); `columns` are the
 * headers; `actions` adds a last column for row buttons, named only for screen readers; the
 * children are the body's rows.
 */
export function DataTable({ label, columns, actions, children }: { label: string; columns: readonly string[]; actions?: boolean; children: ReactNode }) {
  return (
    <div className="table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            {columns.map((column) => (
              <th key={column} scope="col">
                {column}
              </th>
            ))}
            {actions && (
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            )}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
