// A person with a long history pages through all of it with "Load more": every row exactly
// once, in the API's order (newest first), fetched through the cursor, never an offset.
import { check } from '../lib/harness.mjs';
import { readTable, sameRows } from '../lib/history.mjs';

export default async function (t) {
    const { user, history_rows: expectedCount } = t.fixture;
    const page = t.page;
    const historyRequests = [];
    page.on('request', (request) => {
        const url = new URL(request.url());
        if (url.pathname === '/api/v1/users/history') {
            historyRequests.push(url);
        }
    });

    await t.signIn(user);
    await t.navigate('History');
    const table = page.getByRole('table', { name: 'Your quote history' });
    const rows = table.locator('tbody tr');
    const loadMore = page.getByRole('button', { name: 'Load more', exact: true });

    // The page's own history requests while paging (the checks below call the API too).
    const pagingRequests = [];
    const firstPage = await t.step('the first page shows fewer rows than the history holds', async () => {
        await rows.first().waitFor();
        await loadMore.waitFor();
        const count = await rows.count();
        check(count > 0 && count < expectedCount, `the first page shows ${count} of ${expectedCount} rows`);
        return count;
    });

    await t.step(`"Load more" until all ${expectedCount} rows are shown`, async () => {
        let clicks = 0;
        while (await loadMore.isVisible()) {
            const before = await rows.count();
            await loadMore.click();
            clicks += 1;
            check(clicks <= expectedCount, 'Load more never goes away');
            await t.eventually(`more than ${before} rows after click ${clicks}`, async () =>
                (await rows.count()) > before || !(await loadMore.isVisible()));
        }
        const count = await rows.count();
        check(count === expectedCount, `after ${clicks} clicks the table shows ${count} rows, not ${expectedCount}`);
        t.log(`${firstPage} rows first, all ${count} after ${clicks} clicks on "Load more"`);
        pagingRequests.push(...historyRequests);
        await t.audit('history-250');
    });

    await t.step('the table holds the API\'s rows in the API\'s order', async () => {
        const api = await t.apiAll('/api/v1/users/history?limit=1000');
        check(api.length === expectedCount, `the API has ${api.length} rows`);
        sameRows(await readTable(table), api, 'the table');
    });

    await t.step('pages were fetched through the cursor, never an offset', async () => {
        const pageRequests = pagingRequests.filter((url) => !url.searchParams.has('symbol'));
        check(pageRequests.length >= 2, `only ${pageRequests.length} history requests seen`);
        for (const url of pageRequests) {
            check(!/offset|page=/.test(url.search), `a history request used an offset: ${url}`);
        }
        check(pageRequests.slice(1).every((url) => url.searchParams.has('cursor')),
            `a later page was fetched without a cursor: ${pageRequests.map(String).join(' ')}`);
    });
}
