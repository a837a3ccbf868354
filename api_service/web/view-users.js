// Admin users: a paged list (keyset, like history), creating a user, changing a role,
// setting a new password and deleting (after a confirmation dialog). The server refuses to
// remove or demote the last admin; that answer (409) is shown as such.

import * as api from './api.js';
import { clear, h, labelled, messages, uid } from './dom.js';
import { formatInstant } from './format.js';

const PAGE_SIZE = 50;

export function mount(main, { session, endSession }) {
  const controller = new AbortController();
  const signal = controller.signal;
  let next = null;
  let generation = 0;
  const msg = messages();

  // ---- the list ----
  const tbody = h('tbody', {});
  const table = h('table', { class: 'data users', tabindex: '-1' },
    h('caption', {}, 'Users'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Username'),
      h('th', { scope: 'col' }, 'Role'),
      h('th', { scope: 'col', class: 'created' }, 'Created'),
      h('th', { scope: 'col' }, 'Actions'))),
    tbody);
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');

  function userRow(user) {
    const roleCell = h('td', {}, user.role);
    const roleButton = h('button', { type: 'button', class: 'secondary' });
    const setRoleLabel = () => { roleButton.textContent = user.role === 'admin' ? 'Make user' : 'Make admin'; };
    setRoleLabel();
    roleButton.addEventListener('click', async () => {
      const role = user.role === 'admin' ? 'user' : 'admin';
      roleButton.disabled = true;
      try {
        await api.patch(`/api/v1/users/${encodeURIComponent(user.username)}`, { role }, { signal });
        user.role = role;
        roleCell.textContent = role;
        setRoleLabel();
        if (user.username === session.username) {
          endSession({ text: 'Your role changed. Please sign in again.', kind: 'status' });
          return;
        }
        msg.status(`${user.username} is now ${role === 'admin' ? 'an admin' : 'a user'}.`);
      } catch (err) {
        if (err.name !== 'AbortError') msg.error(actionMessage(err, user.username));
      } finally {
        roleButton.disabled = false;
      }
    });
    const resetButton = h('button', { type: 'button', class: 'secondary', onclick: () => openReset(user) }, 'Reset password');
    const deleteButton = h('button', { type: 'button', class: 'danger', onclick: () => openDelete(user, row) }, 'Delete');
    const row = h('tr', { dataset: { username: user.username } },
      h('th', { scope: 'row' }, user.username),
      roleCell,
      h('td', { class: 'created' }, h('time', { datetime: user.created_at }, formatInstant(user.created_at))),
      h('td', {}, h('div', { class: 'actions' }, roleButton, resetButton, deleteButton)));
    return row;
  }

  function actionMessage(err, username) {
    if (err.status === 404) return `There is no user ${username} any more.`;
    return err.message;
  }

  async function loadPage(url, { reset }) {
    const mine = reset ? ++generation : generation;
    more.disabled = true;
    try {
      const { data, headers } = await api.get(url, { signal });
      if (mine !== generation) return;
      if (reset) clear(tbody);
      for (const user of Array.isArray(data) ? data : []) tbody.append(userRow({ ...user }));
      next = api.nextLink(headers);
      more.hidden = !next;
    } catch (err) {
      if (err.name !== 'AbortError') msg.error(err.message);
    } finally {
      more.disabled = false;
    }
  }

  function reload() {
    next = null;
    more.hidden = true;
    return loadPage(`/api/v1/users${api.query({ limit: PAGE_SIZE })}`, { reset: true });
  }

  more.addEventListener('click', async () => {
    if (!next) return;
    await loadPage(next, { reset: false });
    if (more.hidden) table.focus();
  });

  // ---- create ----
  const newUsername = labelled('New username', {
    name: 'new-username', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', required: true, maxlength: 64,
  }, 'Letters, digits and . _ - @, at most 64.');
  const newPassword = labelled('New password', {
    name: 'new-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128,
  }, '8 to 128 characters.');
  const roleId = uid('role');
  const roleSelect = h('select', { id: roleId, name: 'role' },
    h('option', { value: 'user' }, 'user'), h('option', { value: 'admin' }, 'admin'));
  const createButton = h('button', { type: 'submit' }, 'Create user');
  const createForm = h('form', { class: 'card create-user', novalidate: true, 'aria-labelledby': 'create-heading' },
    h('h2', { id: 'create-heading' }, 'Create a user'),
    newUsername.field, newPassword.field,
    h('div', { class: 'field' }, h('label', { for: roleId }, 'Role'), roleSelect),
    createButton);
  createForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = newUsername.input.value.trim();
    const password = newPassword.input.value;
    if (!username || !password) {
      msg.error('Enter a username and a password for the new user.');
      (username ? newPassword.input : newUsername.input).focus();
      return;
    }
    createButton.disabled = true;
    try {
      await api.post('/api/v1/users', { username, password, role: roleSelect.value }, { signal });
      newUsername.input.value = '';
      newPassword.input.value = '';
      roleSelect.value = 'user';
      msg.status(`User ${username} created.`);
      await reload();
    } catch (err) {
      if (err.name === 'AbortError') return;
      msg.error(err.status === 409 && !/last admin/i.test(err.serverMessage)
        ? `The username ${username} is already taken.`
        : err.message);
    } finally {
      createButton.disabled = false;
    }
  });

  // ---- dialogs ----
  const dialog = h('dialog', { class: 'card', 'aria-labelledby': 'dialog-heading' });
  let returnFocus = null;
  dialog.addEventListener('close', () => {
    clear(dialog);
    if (returnFocus && returnFocus.isConnected) returnFocus.focus();
    returnFocus = null;
  });

  function openDialog(heading, ...content) {
    returnFocus = document.activeElement;
    clear(dialog);
    dialog.append(h('h2', { id: 'dialog-heading' }, heading), ...content);
    dialog.showModal();
  }

  function cancelButton() {
    return h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Cancel');
  }

  function openReset(user) {
    const password = labelled('Replacement password', {
      type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128,
    }, `8 to 128 characters. ${user.username} is signed out everywhere.`);
    const dialogMsg = messages();
    const submit = h('button', { type: 'submit' }, 'Set password');
    // The account's name, hidden, so password managers file the new password under it.
    const form = h('form', { novalidate: true },
      h('input', { type: 'text', autocomplete: 'username', value: user.username, hidden: true, readonly: true }),
      password.field, ...dialogMsg.elements,
      h('div', { class: 'buttons' }, submit, cancelButton()));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!password.input.value) { dialogMsg.error('Enter the new password.'); password.input.focus(); return; }
      submit.disabled = true;
      try {
        await api.patch(`/api/v1/users/${encodeURIComponent(user.username)}`, { password: password.input.value }, { signal });
        dialog.close();
        if (user.username === session.username) {
          endSession({ text: 'Your password changed. Sign in with the new one.', kind: 'status' });
          return;
        }
        msg.status(`Password of ${user.username} changed.`);
      } catch (err) {
        if (err.name !== 'AbortError') dialogMsg.error(actionMessage(err, user.username));
      } finally {
        submit.disabled = false;
      }
    });
    openDialog(`Reset the password of ${user.username}`, form);
    password.input.focus();
  }

  function openDelete(user, row) {
    const dialogMsg = messages();
    const confirm = h('button', { type: 'button', class: 'danger' }, 'Confirm delete');
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        await api.del(`/api/v1/users/${encodeURIComponent(user.username)}`, { signal });
        returnFocus = table;
        dialog.close();
        row.remove();
        if (user.username === session.username) {
          endSession({ text: 'Your account was deleted.', kind: 'status' });
          return;
        }
        msg.status(`User ${user.username} deleted.`);
      } catch (err) {
        if (err.name === 'AbortError') return;
        dialogMsg.error(actionMessage(err, user.username));
      } finally {
        confirm.disabled = false;
      }
    });
    openDialog(`Delete ${user.username}?`,
      h('p', {}, `${user.username} and their whole quote history are removed. This cannot be undone.`),
      ...dialogMsg.elements,
      h('div', { class: 'buttons' }, confirm, cancelButton()));
    cancelButtonFocus();
  }

  function cancelButtonFocus() {
    const cancel = dialog.querySelector('button.secondary');
    if (cancel) cancel.focus();
  }

  main.append(
    h('h1', {}, 'Users'),
    ...msg.elements,
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Users', tabindex: '0' }, table),
    more,
    createForm,
    dialog,
  );
  reload();
  return () => {
    controller.abort();
    if (dialog.open) dialog.close();
  };
}
