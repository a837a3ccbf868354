// Sign in: username and password for a session cookie (HttpOnly, so this page never sees the
// token; it gets only the CSRF token and who signed in).

import * as api from './api.js';
import { h, labelled, messages } from './dom.js';

export function mount(main, { notice, onSignedIn }) {
  const controller = new AbortController();
  const msg = messages();
  const username = labelled('Username', {
    name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false',
  });
  const password = labelled('Password', {
    name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const button = h('button', { type: 'submit' }, 'Sign in');

  const form = h('form', { class: 'card narrow', novalidate: true }, username.field, password.field, button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    msg.clear();
    if (!username.input.value.trim() || !password.input.value) {
      msg.error('Enter your username and password.');
      (username.input.value.trim() ? password.input : username.input).focus();
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api.post('/api/v1/session', {
        username: username.input.value.trim(),
        password: password.input.value,
      }, { session: false, signal: controller.signal });
      password.input.value = '';
      onSignedIn(data);
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.status === 401) {
        msg.error('Wrong username or password.');
      } else if (err.status === 429) {
        msg.error(err.retryAfter
          ? `Too many attempts: try again in ${err.retryAfter} ${err.retryAfter === 1 ? 'second' : 'seconds'}.`
          : 'Too many attempts: wait a moment and try again.');
      } else {
        msg.error(err.message);
      }
      password.input.value = '';
      password.input.focus();
    } finally {
      button.disabled = false;
    }
  });

  main.append(h('h1', {}, 'Sign in'), ...msg.elements, form);
  if (notice) {
    if (notice.kind === 'alert') msg.error(notice.text); else msg.status(notice.text);
  }
  username.input.focus();
  return () => controller.abort();
}
