// A symbol the feed does not know gets its own human message; a symbol that breaks the API's
// rules is refused by the page itself, before any request is sent.
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user, unknown_symbol: unknown } = t.fixture;
    const page = t.page;
    const stockRequests = [];
    page.on('request', (request) => {
        if (new URL(request.url()).pathname === '/api/v1/stock') {
            stockRequests.push(request.url());
        }
    });

    await t.signIn(user);
    await t.navigate('Quote');

    await t.step(`${unknown} shows "No such symbol"`, async () => {
        await page.getByLabel('Symbol', { exact: true }).fill(unknown);
        await page.getByRole('button', { name: 'Get quote', exact: true }).click();
        await t.alertContaining('No such symbol');
        check(stockRequests.length === 1, `expected one request to /api/v1/stock, saw ${stockRequests.length}`);
        await t.audit('quote-unknown-symbol');
    });

    await t.step('a symbol with a space and "!" is refused without asking the server', async () => {
        await page.getByLabel('Symbol', { exact: true }).fill('bad symbol!');
        await page.getByRole('button', { name: 'Get quote', exact: true }).click();
        await t.eventually('an alert about the symbol', async () => {
            const alerts = await page.getByRole('alert').allInnerTexts();
            return alerts.some((a) => a.trim() !== '' && !a.includes('No such symbol'));
        });
        check(stockRequests.length === 1, `the invalid symbol was sent to the server: ${stockRequests.slice(1)}`);
    });
}
