// A person gets a quote, sees every field of it, gets another one from the recent symbols in
// one click, and finds them in their history, newest first. The quote page is also checked
// at phone width.
import { check } from '../lib/harness.mjs';
import { showsNumber, showsTime } from '../lib/text.mjs';

export default async function (t) {
    const { user, quotes } = t.fixture;
    const [first, second] = quotes;
    const page = t.page;
    const result = page.getByRole('region', { name: 'Quote result' });

    await t.signIn(user);
    await t.navigate('Quote');

    const ask = async (symbol) => {
        await page.getByLabel('Symbol', { exact: true }).fill(symbol.toLowerCase());
        await page.getByRole('button', { name: 'Get quote', exact: true }).click();
    };
    const showsQuote = async (quote) => {
        await t.eventually(`the quote result shows ${quote.symbol}`,
            async () => (await result.innerText()).toUpperCase().includes(quote.symbol));
        const text = await result.innerText();
        check(text.toUpperCase().includes(quote.name.toUpperCase()), `the result lacks the company name ${quote.name}: ${text}`);
        for (const field of ['close', 'open', 'high', 'low', 'volume']) {
            check(showsNumber(text, quote[field]), `the result lacks the ${field} ${quote[field]}: ${text}`);
        }
        check(/\d{1,2}:\d{2}/.test(text), `the result shows no time of day: ${text}`);
    };

    await t.step(`a quote for ${first.symbol} shows symbol, name, prices, volume and time`, async () => {
        await ask(first.symbol);
        await showsQuote(first);
        const text = await result.innerText();
        for (const [what, time] of [[`in the browser's zone (${t.fixture.timezone})`, first.browser_time], ['at its market', first.market_time]]) {
            check(showsTime(text, time), `the result does not show the time ${what}, ${time}: ${text}`);
        }
        await t.audit('quote');
    });

    await t.step(`a second quote, ${second.symbol}, then ${first.symbol} again from the recent symbols`, async () => {
        await ask(second.symbol);
        await showsQuote(second);
        const recent = page.getByRole('list', { name: 'Recent symbols' });
        await recent.getByRole('button', { name: first.symbol, exact: false }).first().click();
        await showsQuote(first);
    });

    await t.step('at phone width the quote page fits the screen', async () => {
        await atPhoneWidth(t, 'quote-phone', () => showsQuote(first));
    });

    await t.navigate('History');
    await t.step('the three quotes are in the history, newest first, as the API has them', async () => {
        const table = page.getByRole('table', { name: 'Your quote history' });
        const rows = table.locator('tbody tr');
        await t.eventually('three rows in the history table', async () => (await rows.count()) === 3);
        const symbols = await rows.evaluateAll((trs) => trs.map((tr) => tr.innerText.toUpperCase()));
        const expected = [first.symbol, second.symbol, first.symbol];
        expected.forEach((symbol, i) => check(symbols[i].includes(symbol), `row ${i + 1} is not ${symbol}: ${symbols[i]}`));
        const api = await t.apiAll('/api/v1/users/history');
        check(api.map((r) => r.symbol).join() === expected.join(), `the API has ${api.map((r) => r.symbol)}`);
        await t.audit('history');
    });

    await t.step('at phone width the history page fits the screen', async () => {
        await atPhoneWidth(t, 'history-phone', async () => {
            await page.getByRole('table', { name: 'Your quote history' }).waitFor();
        });
    });

    await t.step(`the chart draws the close of ${first.symbol}`, async () => {
        await page.getByLabel('Chart symbol', { exact: true }).selectOption({ label: first.symbol }).catch(async () => {
            await page.getByLabel('Chart symbol', { exact: true }).selectOption(first.symbol);
        });
        const chart = page.getByRole('img', { name: /^Close price of/ });
        await chart.first().waitFor();
        const label = await chart.first().getAttribute('aria-label');
        check(label.toUpperCase().includes(first.symbol), `the chart is labelled "${label}"`);
    });
}

/**
 * Narrows the window to a phone's 390 px, runs `shown` (which waits for the view), checks the
 * page does not scroll sideways (a wide table may scroll inside its own box), audits it and
 * restores the desktop size.
 */
async function atPhoneWidth(t, name, shown) {
    await t.page.setViewportSize({ width: 390, height: 844 });
    await shown();
    const overflow = await t.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check(overflow <= 1, `the ${name} page scrolls sideways by ${overflow} px at 390 px wide`);
    await t.audit(name);
    await t.page.setViewportSize({ width: 1280, height: 900 });
}
