// An admin sees the top 5 as a chart and a table (refreshed on demand and automatically),
// lists the users, and creates a user, makes them admin and back, resets their password and
// deletes them with a confirmation.
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { admin, user, new_user: newUser, refresh_symbol: refreshSymbol, auto_symbol: autoSymbol } = t.fixture;
    const page = t.page;

    await t.signIn(admin);
    await t.navigate('Stats');

    const statsTable = page.locator('table').filter({ has: page.locator('tbody tr') });
    const readStats = async () => (await statsTable.first().innerText()).toUpperCase();

    await t.step('the chart and the table show the API\'s top 5', async () => {
        await page.getByRole('img', { name: 'Top 5 requested stocks' }).waitFor();
        const api = await t.api('GET', '/api/v1/stats');
        check(api.status === 200 && api.json.length > 0, `GET /api/v1/stats: ${api.status} ${api.text}`);
        await t.eventually('every stock of the API in the table', async () => {
            const text = await readStats();
            return api.json.every((s) => text.includes(s.stock.toUpperCase()) && text.includes(String(s.times_requested)));
        });
        const bars = await page.getByRole('img', { name: 'Top 5 requested stocks' }).locator('rect').count();
        check(bars >= api.json.length, `the chart has ${bars} bars for ${api.json.length} stocks`);
        await t.audit('stats');
    });

    await t.step(`"Refresh" shows ${refreshSymbol} once it becomes the most requested`, async () => {
        // Off, so that only the click can bring it.
        await page.getByLabel('Refresh automatically', { exact: true }).uncheck();
        for (let i = 0; i < 8; i++) {
            const quote = await t.api('GET', `/api/v1/stock?q=${refreshSymbol}`);
            check(quote.status === 200, `GET /api/v1/stock?q=${refreshSymbol}: ${quote.status} ${quote.text}`);
        }
        await page.getByRole('button', { name: 'Refresh', exact: true }).click();
        await t.eventually(`${refreshSymbol} in the stats table`, async () => (await readStats()).includes(refreshSymbol.toUpperCase()));
    });

    await t.step(`with "Refresh automatically" on, ${autoSymbol} shows up without a click`, async () => {
        await page.getByLabel('Refresh automatically', { exact: true }).check();
        for (let i = 0; i < 10; i++) {
            const quote = await t.api('GET', `/api/v1/stock?q=${autoSymbol}`);
            check(quote.status === 200, `GET /api/v1/stock?q=${autoSymbol}: ${quote.status} ${quote.text}`);
        }
        await t.eventually(`${autoSymbol} in the stats table`, async () => (await readStats()).includes(autoSymbol.toUpperCase()), 12_000);
    });

    await t.navigate('Users');
    const users = page.getByRole('table', { name: 'Users', exact: true });
    // The row whose cell (td or th) reads exactly `name`.
    const rowOf = (name) => users.getByRole('row').filter({
        has: page.locator('td, th').filter({ hasText: new RegExp(`^\\s*${name}\\s*$`) }),
    });
    const roleOf = async (name) => {
        const all = await t.apiAll('/api/v1/users?limit=100');
        return all.find((u) => u.username === name)?.role ?? null;
    };

    await t.step('the users table lists the admin and the user', async () => {
        await rowOf(admin.username).waitFor();
        await rowOf(user.username).waitFor();
        await t.audit('users');
    });

    await t.step(`create ${newUser.username}`, async () => {
        await page.getByLabel('New username', { exact: true }).fill(newUser.username);
        await page.getByLabel('New password', { exact: true }).fill(newUser.password);
        const role = page.getByLabel('Role', { exact: true });
        if (await role.evaluate((el) => el.tagName === 'SELECT')) {
            await role.selectOption('user');
        }
        await page.getByRole('button', { name: 'Create user', exact: true }).click();
        await rowOf(newUser.username).waitFor();
        check(await roleOf(newUser.username) === 'user', `the API has ${newUser.username} as ${await roleOf(newUser.username)}`);
    });

    await t.step(`promote ${newUser.username} to admin, then demote them`, async () => {
        await rowOf(newUser.username).getByRole('button', { name: /Make admin/ }).click();
        await rowOf(newUser.username).getByRole('button', { name: /Make user/ }).waitFor();
        check(await roleOf(newUser.username) === 'admin', `after "Make admin" the API has ${await roleOf(newUser.username)}`);
        await rowOf(newUser.username).getByRole('button', { name: /Make user/ }).click();
        await rowOf(newUser.username).getByRole('button', { name: /Make admin/ }).waitFor();
        check(await roleOf(newUser.username) === 'user', `after "Make user" the API has ${await roleOf(newUser.username)}`);
    });

    await t.step(`reset the password of ${newUser.username}`, async () => {
        const replacement = `${newUser.password}-reset`;
        await rowOf(newUser.username).getByRole('button', { name: /Reset password/ }).click();
        const dialog = page.getByRole('dialog');
        await dialog.getByLabel(/password/i).fill(replacement);
        await dialog.getByRole('button', { name: 'Set password' }).click();
        await dialog.waitFor({ state: 'hidden' });
        for (const [password, want] of [[newUser.password, 401], [replacement, 200]]) {
            const response = await fetch(`${t.baseUrl}/api/v1/login`, {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ username: newUser.username, password }),
            });
            check(response.status === want, `login with the ${want === 200 ? 'new' : 'old'} password answered ${response.status}`);
        }
    });

    await t.step(`delete ${newUser.username} after confirming`, async () => {
        await rowOf(newUser.username).getByRole('button', { name: /Delete/ }).click();
        const dialog = page.getByRole('dialog');
        await dialog.waitFor();
        await t.audit('users-confirm-delete');
        await dialog.getByRole('button', { name: 'Confirm delete' }).click();
        await t.eventually(`${newUser.username} gone from the table`, async () => (await rowOf(newUser.username).count()) === 0);
        check(await roleOf(newUser.username) === null, `the API still lists ${newUser.username}`);
    });
}
