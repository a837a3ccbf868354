// The watchers can fail: an inline script injected into the app's page is blocked by its CSP
// and reported, and axe-core (injected through the driver despite that CSP) flags a text box
// without a label. Without this, "no violation" could mean "not looking".
import { check } from '../lib/harness.mjs';

export default async function (t) {
    const page = t.page;
    await t.open('');
    await t.heading('Sign in').waitFor();

    await t.step('an inline script is blocked and reported as a CSP violation', async () => {
        await page.evaluate(() => {
            const script = document.createElement('script');
            script.textContent = 'window.__inlineRan = true;';
            document.body.append(script);
        });
        // Both reports must arrive: the DOM event (what the page itself sees) and the console's.
        await t.eventually('the violation reported by the event and on the console', async () =>
            t.cspViolations.some((v) => v.startsWith('event:')) && t.cspViolations.some((v) => v.startsWith('console:')), 3000);
        for (const violation of t.takeCspViolations()) {
            t.log(`reported: ${violation}`);
        }
        check(await page.evaluate(() => window.__inlineRan !== true), 'the inline script ran despite the CSP');
    });

    await t.step('axe-core flags a text box without a label as critical', async () => {
        await page.evaluate(() => {
            const input = document.createElement('input');
            input.type = 'text';
            input.id = 'self-check-unlabelled';
            document.body.append(input);
        });
        const failuresBefore = t.failures.length;
        await t.audit('self-check');
        const flagged = t.failures.splice(failuresBefore);
        flagged.forEach((f) => t.log(`flagged as expected: ${f}`));
        check(flagged.some((f) => / label \(/.test(f)), `axe did not flag the text box: ${flagged.join('; ') || 'no violation'}`);
        await page.evaluate(() => document.getElementById('self-check-unlabelled').remove());
        t.audited.pop();
    });
}
