// A person signs in: a wrong password gets its message, the right one the signed-in layout
// with their name; the session cookie is out of reach of page scripts. Every page a user has
// (Quote, History, Account) is audited.
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user } = t.fixture;
    const page = t.page;

    await t.step('a wrong password is refused with a clear message', async () => {
        await t.open('');
        await t.heading('Sign in').waitFor();
        await t.audit('sign-in');
        await page.getByLabel('Username', { exact: true }).fill(user.username);
        await page.getByLabel('Password', { exact: true }).fill(`${user.password}-wrong`);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await t.alertContaining('Wrong username or password');
        await t.screenshot('sign-in-wrong-password');
    });

    await t.step('the right password, entered with the keyboard alone, signs in', async () => {
        await t.open('');
        await page.getByRole('heading', { name: 'Sign in', level: 1 }).waitFor();
        await t.tabTo(page.getByLabel('Username', { exact: true }));
        await page.keyboard.type(user.username);
        await t.tabTo(page.getByLabel('Password', { exact: true }));
        await page.keyboard.type(user.password);
        await page.keyboard.press('Enter');
        await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
        const banner = page.getByRole('banner');
        const header = (await banner.count()) > 0 ? banner.first() : page.locator('body');
        await t.eventually(`the header shows the name ${user.username}`,
            async () => (await header.innerText()).includes(user.username));
    });

    await t.step('the session cookie is HttpOnly and SameSite=Strict', async () => {
        const cookies = await t.context.cookies();
        const session = cookies.find((c) => c.name === 'sq_session');
        check(session, `no sq_session cookie (cookies: ${cookies.map((c) => c.name).join(', ')})`);
        check(session.httpOnly, 'the session cookie is readable by scripts (not HttpOnly)');
        check(session.sameSite === 'Strict', `the session cookie is SameSite=${session.sameSite}`);
        const visible = await page.evaluate(() => document.cookie);
        check(!visible.includes(session.value), 'document.cookie shows the session token');
    });

    await t.step('a user has Quote, History and Account, and no admin links', async () => {
        for (const name of ['Quote', 'History', 'Account']) {
            await t.nav().getByRole('link', { name, exact: true }).waitFor();
        }
        for (const name of ['Stats', 'Users']) {
            const count = await page.getByRole('link', { name, exact: true }).count();
            check(count === 0, `a user sees a "${name}" link`);
        }
    });

    for (const [name, screenshot] of [['Quote', 'quote-empty'], ['History', 'history-empty'], ['Account', 'account']]) {
        await t.navigate(name);
        await t.audit(screenshot);
    }
}
