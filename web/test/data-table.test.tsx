/** The list table: headers, the unnamed actions column, and the empty row spanning every column. */
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import { DataTable } from '../src/components/data-table.js';

describe('DataTable', () => {
  it('labels the table, heads its columns and adds an actions column named for screen readers only', () => {
    const html = renderToStaticMarkup(
      <DataTable label="Pools" columns={['Pool', 'Range']} actions empty={false}>
        <tr>
          <td>a</td>
        </tr>
      </DataTable>,
    );
    expect(html).toContain('<table aria-label="Pools">');
    expect(html.match(/<th scope="col">/g)).toHaveLength(3);
    expect(html).toContain('<span class="visually-hidden">Actions</span>');
    expect(html).toContain('<tbody><tr><td>a</td></tr></tbody>');
  });

  it('says the list is empty in one row across every column, and only when told', () => {
    const empty = renderToStaticMarkup(<DataTable label="Pools" columns={['Pool', 'Range']} actions empty="No pools yet." children={null} />);
    expect(empty).toContain('<tbody><tr><td colSpan="3">No pools yet.</td></tr></tbody>');
    const loading = renderToStaticMarkup(<DataTable label="Pools" columns={['Pool']} empty={undefined} children={null} />);
    expect(loading).toContain('<tbody></tbody>');
  });
});
