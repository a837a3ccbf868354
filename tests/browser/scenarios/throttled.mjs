// Past the login throttle's limit, the sign-in page says so and how long to wait, instead of
// repeating "wrong password".
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user, max_failures: maxFailures } = t.fixture;
    const page = t.page;
    await t.open('');
    await t.heading('Sign in').waitFor();

    await t.step(`${maxFailures} wrong passwords, then one more`, async () => {
        await page.getByLabel('Username', { exact: true }).fill(user.username);
        for (let attempt = 1; attempt <= maxFailures + 1; attempt++) {
            await page.getByLabel('Password', { exact: true }).fill(`wrong-${attempt}`);
            const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/session' && r.request().method() === 'POST');
            await page.getByRole('button', { name: 'Sign in', exact: true }).click();
            const response = await answered;
            if (response.status() === 429) {
                t.log(`attempt ${attempt}: 429, Retry-After ${response.headers()['retry-after']}`);
                break;
            }
            check(response.status() === 401, `attempt ${attempt} answered ${response.status()}`);
            check(attempt <= maxFailures, `still 401 after ${attempt} wrong passwords`);
        }
    });

    await t.step('the alert says "Too many attempts" and the wait in seconds', async () => {
        const alert = await t.alertContaining('Too many attempts');
        const text = await alert.innerText();
        check(/try again in \d+ seconds?/.test(text), `the alert gives no wait: "${text}"`);
        await t.audit('sign-in-throttled');
    });
}
