// The history table as a person reads it, compared with the API's rows.
import { check } from './harness.mjs';
import { showsNumber } from './text.mjs';

const COLUMNS = ['Date', 'Symbol', 'Name', 'Open', 'High', 'Low', 'Close'];

/** The table's data rows as objects keyed by its column headers (which must be COLUMNS). */
export async function readTable(table) {
    const headers = (await table.locator('thead th').allInnerTexts()).map((h) => h.trim());
    check(COLUMNS.every((c, i) => headers[i] === c), `the history columns are ${headers.join(', ')}`);
    const cells = await table.locator('tbody tr').evaluateAll((trs) =>
        trs.map((tr) => [...tr.querySelectorAll('th, td')].map((cell) => cell.innerText.trim())));
    return cells.map((row) => Object.fromEntries(COLUMNS.map((c, i) => [c.toLowerCase(), row[i]])));
}

/**
 * Fails unless `shown` (rows read from the page or a CSV) are the API's `api` rows, in order:
 * same symbol and name, and each price shown in a usual format.
 */
export function sameRows(shown, api, where) {
    check(shown.length === api.length, `${where} has ${shown.length} rows, the API ${api.length}`);
    api.forEach((row, i) => {
        const got = shown[i];
        const context = `${where}, row ${i + 1}: ${JSON.stringify(got)} vs the API's ${JSON.stringify(row)}`;
        check(got.symbol.toUpperCase() === row.symbol.toUpperCase(), `symbol differs at ${context}`);
        check(got.name === row.name, `name differs at ${context}`);
        for (const field of ['open', 'high', 'low', 'close']) {
            check(showsNumber(` ${got[field]} `, String(row[field])), `${field} differs at ${context}`);
        }
    });
}
