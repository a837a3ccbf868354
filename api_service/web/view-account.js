// Account: change one's own password. Every token of the user stops working on success, so
// the page then asks for a fresh sign-in with the new password.

import * as api from './api.js';
import { h, labelled, messages } from './dom.js';

/**
 * Whether the page's session still signs requests in: anything but a 401 says it does (an
 * aborted check too; its view is gone by then).
 */
async function sessionAlive(signal) {
  try {
    await api.get('/api/v1/session', { session: false, signal });
    return true;
  } catch (err) {
    return err.name === 'AbortError' || err.status !== 401;
  }
}

export function mount(main, { session, endSession }) {
  const controller = new AbortController();
  const msg = messages();
  const current = labelled('Current password', {
    type: 'password', autocomplete: 'current-password', required: true,
  });
  const fresh = labelled('New password', {
    type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128,
  }, '8 to 128 characters.');
  const repeat = labelled('Repeat new password', {
    type: 'password', autocomplete: 'new-password', required: true,
  });
  const button = h('button', { type: 'submit' }, 'Change password');
  const form = h('form', { class: 'card narrow', novalidate: true, 'aria-labelledby': 'password-heading' },
    h('h2', { id: 'password-heading' }, 'Change password'),
    // A hidden username field lets password managers store the new password for this account.
    h('input', { type: 'text', autocomplete: 'username', value: session.username, hidden: true, readonly: true }),
    current.field, fresh.field, repeat.field, button);

  function fail(text, input) {
    msg.error(text);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const field of [current, fresh, repeat]) field.input.removeAttribute('aria-invalid');
    if (!current.input.value) return fail('Enter your current password.', current.input);
    if (fresh.input.value.length < 8) return fail('The new password needs at least 8 characters.', fresh.input);
    if (fresh.input.value !== repeat.input.value) return fail('The two new passwords differ.', repeat.input);
    if (fresh.input.value === current.input.value) return fail('The new password is the same as the current one.', fresh.input);
    button.disabled = true;
    try {
      await api.put('/api/v1/users/me/password', {
        current_password: current.input.value,
        new_password: fresh.input.value,
      }, { session: false, signal: controller.signal });
      endSession({ text: 'Password changed. Sign in with your new password.', kind: 'status' });
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.status === 401 && err.code !== 'csrf_failed') {
        // A session revoked or expired elsewhere is a 401 too: only a live one means the
        // password was wrong.
        const alive = await sessionAlive(controller.signal);
        if (controller.signal.aborted) return;
        if (alive) {
          fail('The current password is wrong.', current.input);
        } else {
          endSession({ text: 'Your session has ended. Please sign in again.', kind: 'status' });
        }
      } else if (err.status === 403 && err.code === 'csrf_failed') {
        endSession({ text: err.message, kind: 'alert' });
      } else {
        msg.error(err.message);
      }
    } finally {
      button.disabled = false;
    }
  });

  main.append(
    h('h1', {}, 'Account'),
    h('p', {}, 'Signed in as ', h('strong', {}, session.username), ` (${session.role}).`),
    ...msg.elements,
    form,
  );
  return () => controller.abort();
}
