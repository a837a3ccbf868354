// A person watches two symbols on the quote page and sees their quotes arrive over the live
// stream; when the feed's prices move, the Last column changes on screen without a click. An
// unknown symbol shows its error in its own row, the server's symbol cap is enforced and said,
// a removed symbol goes, and the list is still there after a reload and after signing out
// and in again. The stack allows one stream per user, so every stream the page replaces or
// leaves must really be closed for the next one to go live.
import { check } from '../lib/harness.mjs';
import { showsNumber } from '../lib/text.mjs';

export default async function (t) {
    const { user, watched, unknown_symbol: unknown, cap, stooq_url: stooqUrl } = t.fixture;
    const [first, second] = watched;
    const page = t.page;
    const region = page.getByRole('region', { name: 'Watchlist' });
    const table = region.getByRole('table', { name: 'Live quotes' });
    const row = (symbol) => table.locator('tbody tr').filter({ has: page.getByRole('rowheader', { name: symbol, exact: true }) });
    const rowText = async (symbol) => (await row(symbol).innerText()).replace(/\s+/g, ' ');
    const lastCell = async (symbol) => row(symbol).locator('td.last').innerText();

    const watch = async (symbol) => {
        await region.getByLabel('Add to watchlist', { exact: true }).fill(symbol.toLowerCase());
        await region.getByRole('button', { name: 'Watch', exact: true }).click();
    };
    const showsLive = () => t.eventually('the watchlist says it is live',
        async () => (await region.getByRole('status').innerText()).trim() === 'Live');

    await t.signIn(user);
    await t.navigate('Quote');

    await t.step(`the watchlist says the server's cap of ${cap} symbols`, async () => {
        const text = await region.innerText();
        check(text.includes(`Up to ${cap} symbols`), `the watchlist does not say its cap: ${text}`);
    });

    await t.step(`watching ${first.symbol} and ${second.symbol} shows both quotes, live`, async () => {
        await watch(first.symbol);
        await watch(second.symbol);
        for (const quote of [first, second]) {
            await t.eventually(`the ${quote.symbol} row shows ${quote.name} at ${quote.close}`, async () => {
                const text = await rowText(quote.symbol);
                return text.toUpperCase().includes(quote.name.toUpperCase()) && showsNumber(await lastCell(quote.symbol), quote.close);
            });
        }
        await showsLive();
        const headers = await table.locator('thead th').allInnerTexts();
        for (const column of ['Symbol', 'Name', 'Last', 'Change', 'Time']) {
            check(headers.some((h) => h.trim() === column), `no ${column} column: ${headers}`);
        }
        check(/\d{1,2}:\d{2}/.test(await rowText(first.symbol)), `the ${first.symbol} row shows no time`);
        await t.audit('watchlist');
    });

    const tick = async () => {
        const response = await fetch(`${stooqUrl}/fake/tick`, { method: 'POST' });
        check(response.ok, `POST /fake/tick answered ${response.status}`);
    };
    /** Waits for the symbol's Last to read `close` and says how the cell was marked then. */
    const changesTo = (quote, close) => t.eventually(`${quote.symbol}'s Last changes to ${close}`, async () => {
        const cell = row(quote.symbol).locator('td.last');
        if (!showsNumber(await cell.innerText(), close)) return false;
        return await cell.evaluate((td) => ({
            flashed: td.classList.contains('flash-up') || td.classList.contains('flash-down'),
            animation: getComputedStyle(td).animationName,
        }));
    });

    await t.step('when the feed moves, Last changes on screen by itself, highlighted a moment', async () => {
        await tick();
        for (const quote of [first, second]) {
            const mark = await changesTo(quote, quote.moved_close);
            check(!showsNumber(await lastCell(quote.symbol), quote.close), `${quote.symbol} still shows ${quote.close}`);
            check(mark.flashed && mark.animation.startsWith('flash-'), `${quote.symbol}'s change was not highlighted: ${JSON.stringify(mark)}`);
        }
        await showsLive();
    });

    await t.step(`an unknown symbol, ${unknown}, shows its error in its own row`, async () => {
        await watch(unknown);
        await t.eventually(`the ${unknown} row says there is no such symbol`,
            async () => (await rowText(unknown.toUpperCase())).includes('No such symbol'));
        check(showsNumber(await lastCell(first.symbol), first.moved_close), `${first.symbol} lost its quote after the list changed`);
        await t.audit('watchlist-error-row');
    });

    await t.step(`a symbol past the cap of ${cap} is refused and says why; an invalid one too`, async () => {
        await watch('ibm.us');
        const alert = await t.alertContaining(`at most ${cap} symbols`);
        check(await region.getByRole('alert').count() === 1, 'the cap message is not in the watchlist');
        check((await alert.innerText()).length > 0, 'the cap message is empty');
        check(await row('IBM.US').count() === 0, 'IBM.US was added past the cap');
        await watch('not a symbol');
        await t.alertContaining('cannot contain a space');
    });

    await t.step(`removing ${second.symbol} and ${unknown} leaves ${first.symbol}, still live`, async () => {
        await row(second.symbol).getByRole('button', { name: 'Remove' }).click();
        await row(unknown.toUpperCase()).getByRole('button', { name: 'Remove' }).click();
        await t.eventually(`only ${first.symbol} is left`, async () => (await table.locator('tbody tr').count()) === 1);
        check(await row(first.symbol).count() === 1, `${first.symbol} went too`);
        await showsLive();
        check(showsNumber(await lastCell(first.symbol), first.moved_close), `${first.symbol} shows ${await lastCell(first.symbol)}`);
    });

    await t.step('after a reload the watchlist is still there and live', async () => {
        await page.reload();
        await t.heading('Quote').waitFor();
        await t.eventually(`the ${first.symbol} row is back with its quote`,
            async () => showsNumber(await lastCell(first.symbol), first.moved_close));
        check(await table.locator('tbody tr').count() === 1, 'the reloaded watchlist has other rows');
        await showsLive();
    });

    await t.step('sign out closes the stream: signed in again, the watchlist goes live at once', async () => {
        await page.getByRole('button', { name: 'Sign out', exact: true }).click();
        await t.heading('Sign in').waitFor();
        check(!(await t.bodyText()).toUpperCase().includes(first.symbol), 'the signed-out page shows the watchlist');
        await page.getByLabel('Username', { exact: true }).fill(user.username);
        await page.getByLabel('Password', { exact: true }).fill(user.password);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await t.heading('Quote').waitFor();
        await t.eventually(`the ${first.symbol} row is back with its quote`,
            async () => showsNumber(await lastCell(first.symbol), first.moved_close));
        await showsLive();
    });

    await t.step('with reduced motion preferred, a change is marked by colour alone', async () => {
        await page.emulateMedia({ reducedMotion: 'reduce' });
        await tick();
        const mark = await changesTo(first, first.moved_again_close);
        check(mark.flashed && mark.animation === 'none', `under reduced motion the change was marked ${JSON.stringify(mark)}`);
    });
}
