// The app shell: who is signed in, the header and navigation, the hash router, and signing
// out. Views are mounted into <main> one at a time; each returns a function that stops its
// timers and requests, and on sign-out both the DOM and every view's state are dropped, so
// the back button finds nothing to show.

import * as api from './api.js';
import { clear, h } from './dom.js';
import * as signinView from './view-signin.js';
import * as quoteView from './view-quote.js';
import * as historyView from './view-history.js';
import * as statsView from './view-stats.js';
import * as usersView from './view-users.js';
import * as accountView from './view-account.js';

const ROUTES = {
  '/quote': { title: 'Quote', view: quoteView },
  '/history': { title: 'History', view: historyView },
  '/account': { title: 'Account', view: accountView },
  '/admin/stats': { title: 'Stats', view: statsView, admin: true },
  '/admin/users': { title: 'Users', view: usersView, admin: true },
};
const NAV = [
  ['/quote', 'Quote'],
  ['/history', 'History'],
  ['/admin/stats', 'Stats', true],
  ['/admin/users', 'Users', true],
  ['/account', 'Account'],
];
const SIGN_IN = '/signin';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

/** {username, role, csrf_token, expires_at} while signed in, else null. */
let session = null;
let unmountView = null;
let expiryTimer = null;
/** Shown once on the sign-in view: why the user is there ({text, kind}). */
let notice = null;
let firstRender = true;

function currentPath() {
  const hash = window.location.hash;
  return hash.startsWith('#/') ? hash.slice(1) : '';
}

function unmount() {
  if (unmountView) unmountView();
  unmountView = null;
  clear(main);
}

function renderHeader(path) {
  clear(nav);
  clear(who);
  nav.hidden = !session;
  who.hidden = !session;
  if (!session) return;
  const links = NAV
    .filter(([, , adminOnly]) => !adminOnly || session.role === 'admin')
    .map(([target, label]) => h('li', {},
      h('a', { href: `#${target}`, 'aria-current': target === path ? 'page' : undefined }, label)));
  nav.append(h('ul', {}, links));
  const signOutButton = h('button', { type: 'button', class: 'secondary', onclick: () => signOut(signOutButton) }, 'Sign out');
  who.append(h('span', { class: 'who-name' }, h('span', { class: 'visually-hidden' }, 'Signed in as '), session.username));
  if (session.role === 'admin') who.append(h('span', { class: 'badge' }, 'admin'));
  who.append(signOutButton);
}

function focusHeading() {
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: false });
  }
}

function render() {
  unmount();
  let path = currentPath();
  if (session && (path === '' || path === SIGN_IN)) {
    window.history.replaceState(null, '', '#/quote');
    path = '/quote';
  }
  if (!session) {
    renderHeader(null);
    document.title = 'Sign in · Stock quotes';
    unmountView = signinView.mount(main, { notice, onSignedIn: signedIn });
    notice = null;
  } else {
    const entry = ROUTES[path];
    renderHeader(path);
    if (!entry || (entry.admin && session.role !== 'admin')) {
      // Admin pages do not exist for users: same answer as any unknown page.
      document.title = 'Page not found · Stock quotes';
      main.append(
        h('h1', {}, 'Page not found'),
        h('p', {}, 'There is no such page. ', h('a', { href: '#/quote' }, 'Get a quote'), ' instead.'),
      );
    } else {
      document.title = `${entry.title} · Stock quotes`;
      unmountView = entry.view.mount(main, {
        session,
        navigate: (target) => { window.location.hash = `#${target}`; },
        endSession,
      });
    }
  }
  if (!firstRender) focusHeading();
  firstRender = false;
}

function startSession(data) {
  session = {
    username: String(data.username),
    role: data.role === 'admin' ? 'admin' : 'user',
    expiresAt: data.expires_at,
  };
  api.setCsrfToken(data.csrf_token);
  clearTimeout(expiryTimer);
  const left = new Date(data.expires_at).getTime() - Date.now();
  if (Number.isFinite(left) && left > 0 && left < 2 ** 31) {
    expiryTimer = setTimeout(
      () => endSession({ text: 'Your session has expired. Please sign in again.', kind: 'status' }),
      left,
    );
  }
}

function signedIn(data) {
  // The sign-in form's hash is replaced (not pushed) by the first page, so Back does not
  // return to the form; a bookmarked page (#/history) is kept.
  startSession(data);
  render();
}

/**
 * Forgets the session on this page: every view's DOM and state go, the CSRF token too.
 * `keepPlace` leaves the hash so signing in again returns to the same page.
 */
function endSession(message, { keepPlace = true } = {}) {
  unmount();
  session = null;
  api.setCsrfToken(null);
  clearTimeout(expiryTimer);
  notice = message || null;
  if (!keepPlace) window.history.replaceState(null, '', `#${SIGN_IN}`);
  render();
}

/**
 * Ends the browser's session on the server. A 403 csrf_failed means the cookie now holds
 * another sign-in (from another tab), whose token this page lacks: that one is ended too,
 * with its own CSRF token, so "Sign out" never leaves the browser signed in.
 */
async function endServerSession() {
  try {
    await api.del('/api/v1/session', { session: false });
  } catch (err) {
    if (err.code !== 'csrf_failed') throw err;
    const { data } = await api.get('/api/v1/session', { session: false });
    api.setCsrfToken(data.csrf_token);
    await api.del('/api/v1/session', { session: false });
  }
}

async function signOut(button) {
  button.disabled = true;
  let message = { text: 'You have signed out.', kind: 'status' };
  try {
    await endServerSession();
  } catch (err) {
    if (err.status === 0 || err.status >= 500) {
      message = {
        text: 'Signed out on this page, but the server could not be told: the session ends when it expires.',
        kind: 'alert',
      };
    }
  }
  endSession(message, { keepPlace: false });
}

async function start() {
  api.onSessionLost(() => {
    if (session) endSession({ text: 'Your session has ended. Please sign in again.', kind: 'status' });
  });
  try {
    const { data } = await api.get('/api/v1/session', { session: false });
    startSession(data);
  } catch (err) {
    if (err.status !== 401) notice = { text: err.message, kind: 'alert' };
  }
  window.addEventListener('hashchange', () => {
    // In-page anchors (the skip link) are not routes.
    if (window.location.hash.startsWith('#/') || window.location.hash === '') render();
  });
  render();
}

document.getElementById('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

start();
