// The scenario harness: one headless Chromium per scenario, a page watched for what must never
// happen (CSP violations, uncaught errors), an accessibility audit and a screenshot of every
// page the scenario shows, and helpers that act like a person (by role, label and text).
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** How long a person would wait for something to show before calling it broken. */
const WAIT_MS = 10_000;
/** Impacts that fail a page's accessibility audit. */
const FAILING_IMPACTS = new Set(['serious', 'critical']);

export class Failure extends Error {}

/** Fails the scenario with `message` unless `condition` holds. */
export function check(condition, message) {
    if (!condition) {
        throw new Failure(message);
    }
}

/**
 * Runs `scenarios/<name>.mjs` and reports; true when it passed. Every failure is printed, the
 * scenario's own and the watchers' (CSP, page errors, accessibility), so one run shows all.
 */
export async function runScenario({ baseUrl, scenario, artifacts, chromium: executablePath, fixture }) {
    mkdirSync(artifacts, { recursive: true });
    const { default: body } = await import(`../scenarios/${scenario}.mjs`);
    const browser = await chromium.launch({
        executablePath,
        headless: true,
        // Root in a container has no user namespace for Chromium's sandbox.
        args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    const t = new Scenario({ browser, baseUrl, artifacts, fixture, name: scenario });
    const started = Date.now();
    try {
        await t.start();
        await body(t);
    } catch (error) {
        t.failures.push(error instanceof Failure ? error.message : error.stack || String(error));
        await t.dumpPage('FAILED');
    }
    t.checkWatchers();
    await browser.close();
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (t.failures.length === 0) {
        console.log(`PASSED ${scenario} in ${seconds} s (${t.audited.length} pages audited: ${t.audited.join(', ')})`);
        console.log(`screenshots in ${artifacts}`);
        return true;
    }
    console.log(`FAILED ${scenario} after ${seconds} s:`);
    for (const failure of t.failures) {
        console.log(`  - ${failure}`);
    }
    console.log(`screenshots in ${artifacts}`);
    return false;
}

class Scenario {
    constructor({ browser, baseUrl, artifacts, fixture, name }) {
        this.browser = browser;
        this.baseUrl = baseUrl;
        this.artifacts = artifacts;
        this.fixture = fixture;
        this.name = name;
        this.failures = [];
        this.audited = [];
        this.cspViolations = [];
        this.pageErrors = [];
        this.checkedHeaders = false;
    }

    async start() {
        this.context = await this.browser.newContext({
            viewport: { width: 1280, height: 900 },
            acceptDownloads: true,
            locale: 'en-US',
            // A zone of the scenario's choice, so "the browser's time zone" is not UTC by accident.
            timezoneId: this.fixture.timezone || 'UTC',
            // Never bypassCSP: the point is to run under the page's real policy.
        });
        this.page = await this.context.newPage();
        this.page.setDefaultTimeout(WAIT_MS);
        await this.watch(this.page);
    }

    /**
     * Records every CSP violation (the DOM event, reported through a binding that an init
     * script installs before any page script runs, and Chromium's console report) and every
     * uncaught page error. `checkWatchers` turns them into failures.
     */
    async watch(page) {
        await page.exposeBinding('__reportCspViolation', (_source, violation) => {
            this.cspViolations.push(`event: ${violation}`);
        });
        await page.addInitScript(() => {
            document.addEventListener('securitypolicyviolation', (e) => {
                window.__reportCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile || '?'}:${e.lineNumber})`);
            });
        });
        page.on('console', (message) => {
            const text = message.text();
            if (/Content[- ]Security[- ]Policy/i.test(text)) {
                this.cspViolations.push(`console: ${text}`);
            } else if (message.type() === 'error' || message.type() === 'warning') {
                // Failed requests the scenario provokes (401, 404, …) land here too: shown, not failed.
                console.log(`  [console ${message.type()}] ${text}`);
            }
        });
        page.on('pageerror', (error) => this.pageErrors.push(error.stack || String(error)));
    }

    checkWatchers() {
        for (const violation of this.cspViolations) {
            this.failures.push(`Content-Security-Policy violation: ${violation}`);
        }
        for (const error of this.pageErrors) {
            this.failures.push(`uncaught error in the page: ${error}`);
        }
    }

    /** Forgets the CSP violations seen so far and returns them (for the harness's self-test). */
    takeCspViolations() {
        return this.cspViolations.splice(0);
    }

    log(message) {
        console.log(`  ${message}`);
    }

    /** Runs one named step, so a failure says where it happened. */
    async step(name, action) {
        this.log(`step: ${name}`);
        try {
            return await action();
        } catch (error) {
            if (error instanceof Failure) {
                error.message = `${name}: ${error.message}`;
                throw error;
            }
            throw new Failure(`${name}: ${error.message}`);
        }
    }

    /**
     * Opens the app at a hash route ('' for the start page). The first load also checks the
     * security headers the HTML must carry, so "no CSP violation" means something.
     */
    async open(route = '') {
        const response = await this.page.goto(`${this.baseUrl}/${route}`);
        if (!this.checkedHeaders && response) {
            this.checkedHeaders = true;
            check(response.status() === 200, `GET / answered ${response.status()}, not 200`);
            const headers = response.headers();
            const csp = headers['content-security-policy'] || '';
            check(/script-src 'self'/.test(csp) && !/unsafe-inline|unsafe-eval/.test(csp),
                `the page's Content-Security-Policy is not strict: "${csp}"`);
            check(/frame-ancestors 'none'/.test(csp), `CSP lacks frame-ancestors 'none': "${csp}"`);
            check(headers['x-content-type-options'] === 'nosniff', 'X-Content-Type-Options is not nosniff');
            check(Boolean(headers['referrer-policy']), 'no Referrer-Policy header');
        }
    }

    /** Signs in through the sign-in view, as a person would, and waits for the signed-in layout. */
    async signIn({ username, password }) {
        await this.step(`sign in as ${username}`, async () => {
            await this.open('');
            await this.page.getByRole('heading', { name: 'Sign in', level: 1 }).waitFor();
            await this.page.getByLabel('Username', { exact: true }).fill(username);
            await this.page.getByLabel('Password', { exact: true }).fill(password);
            await this.page.getByRole('button', { name: 'Sign in', exact: true }).click();
            await this.page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
        });
    }

    /** Follows the navigation link `name` and waits for the view's heading. */
    async navigate(name) {
        await this.step(`open ${name} from the navigation`, async () => {
            await this.nav().getByRole('link', { name, exact: true }).click();
            await this.heading(name).waitFor();
        });
    }

    /** Presses Tab until `locator` has the focus, as a keyboard user reaches a control. */
    async tabTo(locator, maxPresses = 30) {
        const handle = await locator.elementHandle();
        for (let i = 0; i < maxPresses; i++) {
            if (await handle.evaluate((el) => el === document.activeElement)) {
                return;
            }
            await this.page.keyboard.press('Tab');
        }
        throw new Failure(`${locator} is not reached with ${maxPresses} presses of Tab`);
    }

    nav() {
        return this.page.getByRole('navigation');
    }

    heading(name) {
        return this.page.getByRole('heading', { name, exact: true, level: 1 });
    }

    /** The alert whose text contains `text`, once it shows. */
    async alertContaining(text) {
        const alert = this.page.getByRole('alert').filter({ hasText: text });
        await alert.first().waitFor();
        return alert.first();
    }

    /** Polls `probe` until it returns a truthy value; fails with `what` after the wait. */
    async eventually(what, probe, timeout = WAIT_MS) {
        const deadline = Date.now() + timeout;
        let last;
        for (;;) {
            try {
                last = await probe();
                if (last) {
                    return last;
                }
            } catch (error) {
                last = error.message;
            }
            if (Date.now() > deadline) {
                throw new Failure(`${what} (not within ${timeout} ms; last: ${JSON.stringify(last)})`);
            }
            await new Promise((resolve) => setTimeout(resolve, 100));
        }
    }

    /**
     * Calls the API from inside the page, with its session cookie (what page scripts can do).
     * Non-GET requests carry the session's CSRF token, read from GET /api/v1/session.
     */
    async api(method, path, body) {
        return await this.page.evaluate(async ({ method, path, body }) => {
            const headers = {};
            if (method !== 'GET') {
                const session = await fetch('/api/v1/session', { credentials: 'same-origin' });
                if (session.ok) {
                    headers['X-CSRF-Token'] = (await session.json()).csrf_token;
                }
            }
            if (body !== undefined) {
                headers['Content-Type'] = 'application/json';
            }
            const response = await fetch(path, {
                method,
                headers,
                credentials: 'same-origin',
                body: body === undefined ? undefined : JSON.stringify(body),
            });
            const text = await response.text();
            let json = null;
            try {
                json = JSON.parse(text);
            } catch {
                // Not JSON (CSV, empty 204): the text is kept.
            }
            return { status: response.status, text, json, link: response.headers.get('link') };
        }, { method, path, body });
    }

    /** Every row of an API collection, following its `Link: rel="next"` pages. */
    async apiAll(path) {
        const rows = [];
        let next = path;
        while (next) {
            const response = await this.api('GET', next);
            check(response.status === 200, `GET ${next} answered ${response.status}: ${response.text}`);
            rows.push(...response.json);
            const match = /<([^>]+)>;\s*rel="next"/.exec(response.link || '');
            next = match ? match[1] : null;
        }
        return rows;
    }

    /**
     * The page's accessibility audit (axe-core, evaluated through the driver: the page's CSP
     * does not apply to it) and its screenshot. Serious or critical violations fail the scenario.
     */
    async audit(pageName) {
        await this.step(`audit the ${pageName} page`, async () => {
            await this.screenshot(pageName);
            const hasAxe = await this.page.evaluate(() => typeof window.axe !== 'undefined');
            if (!hasAxe) {
                await this.page.evaluate(AXE_SOURCE);
            }
            const results = await this.page.evaluate(async () => {
                const outcome = await window.axe.run(document, { resultTypes: ['violations'] });
                return outcome.violations.map((v) => ({
                    id: v.id,
                    impact: v.impact,
                    help: v.help,
                    targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
                }));
            });
            this.audited.push(pageName);
            for (const v of results) {
                const line = `${v.impact} accessibility violation on ${pageName}: ${v.id} (${v.help}) at ${v.targets.join(', ')}`;
                if (FAILING_IMPACTS.has(v.impact)) {
                    this.failures.push(line);
                } else {
                    this.log(`note: ${line}`);
                }
            }
            return results;
        });
    }

    async screenshot(name) {
        const path = join(this.artifacts, `${name}.png`);
        await this.page.screenshot({ path, fullPage: true });
        this.log(`screenshot: ${path}`);
    }

    /** On failure: a screenshot and the visible text, to see what the page showed instead. */
    async dumpPage(name) {
        try {
            await this.screenshot(name);
            const text = await this.page.evaluate(() => document.body ? document.body.innerText : '(no body)');
            console.log(`  page at failure (${this.page.url()}):\n${text.slice(0, 3000).replace(/^/gm, '    | ')}`);
        } catch (error) {
            console.log(`  (could not capture the page: ${error.message})`);
        }
    }

    /** The visible text of the whole page. */
    async bodyText() {
        return await this.page.evaluate(() => document.body.innerText);
    }
}
