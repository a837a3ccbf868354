// A user sees no admin link, gets no admin data by typing the admin routes, and the API
// refuses them with 403 whatever the page does (read and write, with a valid CSRF token).
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user, admin, others_symbol: othersSymbol } = t.fixture;
    const page = t.page;

    await t.signIn(user);

    await t.step('no Stats or Users link anywhere', async () => {
        await t.nav().getByRole('link', { name: 'Quote', exact: true }).waitFor();
        for (const name of ['Stats', 'Users']) {
            check(await page.getByRole('link', { name, exact: true }).count() === 0, `a user sees a "${name}" link`);
        }
    });

    for (const route of ['#/admin/users', '#/admin/stats']) {
        await t.step(`typing ${route} shows no admin data`, async () => {
            await t.open(route);
            await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
            // Time for any data the page might (wrongly) fetch and draw.
            await page.waitForTimeout(1000);
            const text = (await t.bodyText()).toUpperCase();
            check(!text.includes(admin.username.toUpperCase()), `${route} shows the admin's name`);
            check(!text.includes(othersSymbol.toUpperCase()), `${route} shows another user's symbol (stats)`);
            check(await page.getByRole('table', { name: 'Users', exact: true }).count() === 0, `${route} shows the users table`);
            check(await page.getByRole('img', { name: 'Top 5 requested stocks' }).count() === 0, `${route} shows the stats chart`);
            await t.screenshot(`user-at-${route.replace(/\W+/g, '-').replace(/^-/, '')}`);
        });
    }

    await t.step('the API answers 403 to the user\'s session', async () => {
        const calls = [
            ['GET', '/api/v1/stats'],
            ['GET', '/api/v1/users'],
            ['POST', '/api/v1/users', { username: 'mallory', password: 'a-long-enough-passw0rd', role: 'admin' }],
            ['PATCH', `/api/v1/users/${user.username}`, { role: 'admin' }],
            ['DELETE', `/api/v1/users/${admin.username}`],
        ];
        for (const [method, path, body] of calls) {
            const response = await t.api(method, path, body);
            check(response.status === 403, `${method} ${path} answered ${response.status}: ${response.text}`);
            check(response.json?.error?.code === 'forbidden', `${method} ${path}: error code ${response.json?.error?.code}, not forbidden`);
        }
    });
}
