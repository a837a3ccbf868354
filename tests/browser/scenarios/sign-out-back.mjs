// After "Sign out", the browser's back button shows none of the user's data, and the session
// is over on the server too (the cookie no longer authenticates anything), even when another
// tab signed in again meanwhile.
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user, quotes: [quote] } = t.fixture;
    const page = t.page;

    await t.signIn(user);
    await t.navigate('Quote');
    await t.step(`get ${quote.symbol} and see it in the history`, async () => {
        await page.getByLabel('Symbol', { exact: true }).fill(quote.symbol);
        await page.getByRole('button', { name: 'Get quote', exact: true }).click();
        await page.getByRole('region', { name: 'Quote result' }).getByText(quote.name).first().waitFor();
        await t.navigate('History');
        await page.getByRole('table', { name: 'Your quote history' }).getByText(quote.name).first().waitFor();
    });

    await t.step('sign out', async () => {
        await page.getByRole('button', { name: 'Sign out', exact: true }).click();
        await t.heading('Sign in').waitFor();
        const cookies = await t.context.cookies();
        check(!cookies.some((c) => c.name === 'sq_session' && c.value !== ''), 'the session cookie is still set');
    });

    await t.step('back shows no data', async () => {
        await page.goBack();
        // Give a page that (wrongly) restores or refetches its views the time to draw them.
        await page.waitForTimeout(1000);
        const text = (await t.bodyText()).toUpperCase();
        check(!text.includes(quote.name.toUpperCase()), `after back the page shows ${quote.name}`);
        check(!text.includes(quote.symbol.toUpperCase()), `after back the page shows ${quote.symbol}`);
        check(await page.getByRole('button', { name: 'Sign out', exact: true }).count() === 0, 'after back the page offers "Sign out" as if signed in');
        await t.screenshot('after-sign-out-back');
    });

    await t.step('the session is over on the server', async () => {
        for (const path of ['/api/v1/session', '/api/v1/users/history']) {
            const response = await t.api('GET', path);
            check(response.status === 401, `GET ${path} after sign-out answered ${response.status}`);
        }
    });

    await t.step('after a sign-in in another tab, sign out still ends the session', async () => {
        await t.signIn(user);
        // Another tab signs in: the cookie now holds a new session, whose CSRF token this
        // page does not have.
        const other = await t.api('POST', '/api/v1/session', user);
        check(other.status === 200, `signing in from another tab answered ${other.status}: ${other.text}`);
        await page.getByRole('button', { name: 'Sign out', exact: true }).click();
        await t.heading('Sign in').waitFor();
        const response = await t.api('GET', '/api/v1/session');
        check(response.status === 401, `after "Sign out" the browser is still signed in (${response.status})`);
    });
}
