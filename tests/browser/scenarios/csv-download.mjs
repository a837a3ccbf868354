// "Download CSV" downloads the whole history (not just the rows on screen), exactly the API's
// rows, names with commas and quotes intact; with a symbol filter it downloads that symbol's.
import { readFileSync } from 'node:fs';
import { check } from '../lib/harness.mjs';
import { readTable, sameRows } from '../lib/history.mjs';
import { parseCsv } from '../lib/text.mjs';

const HEADER = 'date,symbol,name,open,high,low,close';

export default async function (t) {
    const { user, history_rows: expectedCount, filter_symbol: filterSymbol } = t.fixture;
    const page = t.page;
    const table = page.getByRole('table', { name: 'Your quote history' });
    const download = page.getByRole('link', { name: 'Download CSV' }).or(page.getByRole('button', { name: 'Download CSV' }));

    const downloadCsv = async () => {
        const [file] = await Promise.all([page.waitForEvent('download'), download.first().click()]);
        const body = readFileSync(await file.path(), 'utf8');
        const [header, ...rows] = parseCsv(body).filter((row) => row.some((field) => field !== ''));
        check(header.join(',') === HEADER, `the CSV header is "${header.join(',')}"`);
        t.log(`downloaded ${file.suggestedFilename()}: ${rows.length} rows`);
        return rows.map(([date, symbol, name, open, high, low, close]) => ({ date, symbol, name, open, high, low, close }));
    };

    await t.signIn(user);
    await t.navigate('History');
    await table.locator('tbody tr').first().waitFor();

    await t.step(`the download holds all ${expectedCount} rows, as the API and the table have them`, async () => {
        const csv = await downloadCsv();
        const api = await t.apiAll('/api/v1/users/history?limit=1000');
        check(api.length === expectedCount, `the API has ${api.length} rows`);
        sameRows(csv, api, 'the CSV');
        csv.forEach((row, i) => check(Date.parse(row.date) === Date.parse(api[i].date),
            `the CSV's date ${row.date} is not the API's ${api[i].date} (row ${i + 1})`));
        const shown = await readTable(table);
        sameRows(csv.slice(0, shown.length), api.slice(0, shown.length), 'the CSV against the table');
        sameRows(shown, api.slice(0, shown.length), 'the table');
    });

    await t.step(`filtered by ${filterSymbol}, the table and the download hold only its rows`, async () => {
        await page.getByLabel('Filter by symbol', { exact: true }).fill(filterSymbol.toLowerCase());
        await page.getByLabel('Filter by symbol', { exact: true }).press('Enter');
        const api = await t.apiAll(`/api/v1/users/history?limit=1000&symbol=${encodeURIComponent(filterSymbol)}`);
        check(api.length > 0 && api.length < expectedCount, `the API has ${api.length} rows for ${filterSymbol}`);
        await t.eventually('the table shows only the filtered symbol', async () => {
            const rows = await readTable(table);
            return rows.length > 0 && rows.every((r) => r.symbol.toUpperCase() === filterSymbol.toUpperCase());
        });
        const href = await download.first().getAttribute('href');
        check(href === null || /symbol=/i.test(href), `the download link drops the filter: ${href}`);
        sameRows(await downloadCsv(), api, 'the filtered CSV');
        await t.audit('history-filtered');
    });
}
