/** The panel's list table: a labelled table in a horizontally scrolling frame, with column headers and an unlabelled actions column. */
import type { ReactNode } from 'react';

/**
 * `label` names the table for assistive technology (and the browser tests); `columns` are the
 * headers; `actions` adds a last column for row buttons, named only for screen readers; the
 * children are the body's rows; `empty`, when given (not false), is a row across every column
 * saying the list has none.
 */
export function DataTable({
  label,
  columns,
  actions,
  empty,
  children,
}: {
  label: string;
  columns: readonly string[];
  actions?: boolean;
  empty?: ReactNode;
  children: ReactNode;
}) {
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
        <tbody>
          {children}
          {empty !== undefined && empty !== false && empty !== null && (
            <tr>
              <td colSpan={columns.length + (actions ? 1 : 0)}>{empty}</td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}
