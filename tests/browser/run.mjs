// Runs one browser scenario of tests/browser/scenarios against a running stack, in headless
// Chromium driven by playwright-core. tests/tests/browser (the Rust side) starts the stack,
// creates the users and data the scenario needs, and runs:
//
//   node tests/browser/run.mjs --base-url http://127.0.0.1:PORT --scenario quote \
//        --artifacts DIR --chromium /usr/bin/chromium --fixture '{"user":{…},…}'
//
// Exit 0 when every step passed and the page raised no CSP violation, no uncaught error and
// no serious or critical accessibility violation; 1 otherwise, with the reasons on stderr.
// Screenshots (one per page visited, plus FAILED.png) are written to DIR.
import { parseArgs } from 'node:util';
import { runScenario } from './lib/harness.mjs';

const { values } = parseArgs({
    options: {
        'base-url': { type: 'string' },
        scenario: { type: 'string' },
        artifacts: { type: 'string' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
        fixture: { type: 'string', default: '{}' },
    },
});
for (const required of ['base-url', 'scenario', 'artifacts']) {
    if (!values[required]) {
        console.error(`run.mjs: --${required} is required`);
        process.exit(2);
    }
}

const ok = await runScenario({
    baseUrl: values['base-url'].replace(/\/$/, ''),
    scenario: values.scenario,
    artifacts: values.artifacts,
    chromium: values.chromium,
    fixture: JSON.parse(values.fixture),
});
process.exit(ok ? 0 : 1);
