// A person changes their password on the Account page: a wrong current password is refused
// there; on success they are asked to sign in again, the old password no longer works and the
// new one does. A session that ended elsewhere is not taken for a wrong password.
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const { user, new_password: newPassword } = t.fixture;
    const page = t.page;

    await t.signIn(user);
    await t.navigate('Account');
    const change = async (current, fresh) => {
        await page.getByLabel('Current password', { exact: true }).fill(current);
        await page.getByLabel('New password', { exact: true }).fill(fresh);
        await page.getByLabel('Repeat new password', { exact: true }).fill(fresh);
        await page.getByRole('button', { name: 'Change password', exact: true }).click();
    };

    await t.step('a wrong current password is refused', async () => {
        await change(`${user.password}-wrong`, newPassword);
        await t.alertContaining('current password is wrong');
        await t.heading('Account').waitFor();
    });

    await t.step('the right one changes it and asks to sign in again', async () => {
        await change(user.password, newPassword);
        await t.heading('Sign in').waitFor();
        await page.getByRole('status').filter({ hasText: 'Sign in with your new password' }).first().waitFor();
    });

    await t.step('the old password is refused, the new one signs in', async () => {
        await page.getByLabel('Username', { exact: true }).fill(user.username);
        await page.getByLabel('Password', { exact: true }).fill(user.password);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await t.alertContaining('Wrong username or password');
        await t.signIn({ username: user.username, password: newPassword });
    });

    await t.step('a session ended elsewhere sends them to sign in, not to retype the password', async () => {
        await t.navigate('Account');
        // Signed out from another tab: the token is revoked and the cookie dropped.
        const signedOut = await t.api('DELETE', '/api/v1/session');
        check(signedOut.status === 204, `signing out answered ${signedOut.status}: ${signedOut.text}`);
        await change(newPassword, `${newPassword}-2`);
        await t.heading('Sign in').waitFor();
        await page.getByRole('status').filter({ hasText: 'Your session has ended' }).first().waitFor();
    });
}
