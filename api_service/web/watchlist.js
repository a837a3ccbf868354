// The quote page's live watchlist: symbols a person keeps (per user, in localStorage) with
// their quotes pushed by GET /api/v1/stream. One EventSource carries the whole list and is
// re-opened whenever the list changes; the browser itself reconnects a dropped stream and
// resumes it with Last-Event-ID. When the server refuses the stream outright (EventSource
// then gives up and cannot say why), one plain request finds out: a 401 ends the session
// like any other, anything else is shown and retried later.

import * as api from './api.js';
import { h, labelled, messages } from './dom.js';
import { formatInstant, formatPrice } from './format.js';
import { parseSymbol } from './symbol.js';

/** STREAM_MAX_SYMBOLS' default, used only if the page does not name the server's own. */
const DEFAULT_CAP = 20;
/** How long a changed price stays highlighted. */
const FLASH_MS = 1500;
/** Waits before trying again after the server refused the stream, growing per failure. */
const RETRY_MS = [2_000, 5_000, 10_000, 30_000, 60_000];

/** The server's per-stream symbol cap, from the page's <meta name="stream-max-symbols">. */
function streamCap() {
  const meta = document.querySelector('meta[name="stream-max-symbols"]');
  const cap = Number.parseInt(meta ? meta.content : '', 10);
  return Number.isInteger(cap) && cap > 0 ? cap : DEFAULT_CAP;
}

function storageKey(username) {
  return `stock-quotes.watchlist.${username}`;
}

/** The saved list: valid, distinct, normalised symbols, at most `cap` of them. */
function loadList(username, cap) {
  try {
    const saved = JSON.parse(window.localStorage.getItem(storageKey(username)) || '[]');
    if (!Array.isArray(saved)) return [];
    const symbols = saved.map((item) => parseSymbol(item)).filter((p) => p.ok).map((p) => p.symbol);
    return [...new Set(symbols)].slice(0, cap);
  } catch {
    return [];
  }
}

function saveList(username, list) {
  try {
    window.localStorage.setItem(storageKey(username), JSON.stringify(list));
  } catch {
    // Storage full or disabled: the watchlist lasts as long as the page.
  }
}

const percent = new Intl.NumberFormat(undefined, {
  style: 'percent', minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
});
const signedPrice = new Intl.NumberFormat(undefined, {
  minimumFractionDigits: 2, maximumFractionDigits: 4, signDisplay: 'exceptZero',
});

/** The change from the day's open, e.g. "+1.25 (+0.68%)", and its direction. */
function changeFromOpen(quote) {
  if (!Number.isFinite(quote.quote) || !Number.isFinite(quote.open) || quote.open === 0) {
    return { text: '–', direction: 'flat' };
  }
  const delta = quote.quote - quote.open;
  const direction = delta > 0 ? 'up' : delta < 0 ? 'down' : 'flat';
  return { text: `${signedPrice.format(delta)} (${percent.format(delta / quote.open)})`, direction };
}

function rowErrorText(error) {
  if (error.code === 'not_found') return 'No such symbol';
  return error.message || 'No quote available';
}

/**
 * Builds the watchlist for `session`'s user. Returns {element, stop}: `stop` closes the
 * stream and every timer (the view calls it on leaving the page and on sign-out).
 */
export function watchlist({ session }) {
  const cap = streamCap();
  let list = loadList(session.username, cap);
  /** symbol → {row, name, last, change, time, price, flashTimer} */
  const rows = new Map();
  let source = null;
  let probe = null;
  let retryTimer = null;
  let failures = 0;
  let stopped = false;

  const msg = messages();
  const input = labelled('Add to watchlist', {
    name: 'watch-symbol', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false',
    maxlength: 64, placeholder: 'msft.us',
  }, `Up to ${cap} symbols (the server's limit for one live stream); prices update as they change.`);
  const watchButton = h('button', { type: 'submit' }, 'Watch');
  const form = h('form', { class: 'inline-form', novalidate: true }, input.field, watchButton);
  const state = h('p', { role: 'status', class: 'live-state', hidden: true });
  const count = h('p', { class: 'muted count' });
  const body = h('tbody');
  const table = h('table', { class: 'data watchlist' },
    h('caption', {}, 'Live quotes'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Symbol'),
      h('th', { scope: 'col' }, 'Name'),
      h('th', { scope: 'col', class: 'num' }, 'Last'),
      h('th', { scope: 'col', class: 'num' }, 'Change'),
      h('th', { scope: 'col' }, 'Time'),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    body);
  const tableWrap = h('div', { class: 'table-wrap' }, table);
  const note = h('p', { class: 'hint' }, 'Change is from the day\'s open. Nothing here is added to your history.');
  const element = h('section', { 'aria-labelledby': 'watchlist-heading', class: 'watchlist-section' },
    h('h2', { id: 'watchlist-heading' }, 'Watchlist'),
    form, ...msg.elements, state, count, tableWrap, note);

  function setState(kind, text) {
    state.dataset.state = kind || '';
    state.textContent = text || '';
    state.hidden = !text;
  }

  function renderCount() {
    count.textContent = list.length === 0
      ? 'Nothing watched yet: add a symbol above.'
      : `Watching ${list.length} of at most ${cap} symbols.`;
    tableWrap.hidden = list.length === 0;
    note.hidden = list.length === 0;
  }

  function addRow(symbol) {
    const entry = {
      name: h('td', {}, h('span', { class: 'muted' }, 'Waiting for the first quote…')),
      last: h('td', { class: 'num last' }, '–'),
      change: h('td', { class: 'num change' }, '–'),
      time: h('td', {}, '–'),
      price: undefined,
      flashTimer: null,
    };
    const remove = h('button', {
      type: 'button', class: 'secondary small', onclick: () => removeSymbol(symbol),
    }, 'Remove', h('span', { class: 'visually-hidden' }, ` ${symbol.toUpperCase()}`));
    entry.row = h('tr', { dataset: { symbol } },
      h('th', { scope: 'row' }, symbol.toUpperCase()),
      entry.name, entry.last, entry.change, entry.time,
      h('td', {}, remove));
    rows.set(symbol, entry);
    body.append(entry.row);
  }

  function flash(entry, direction) {
    clearTimeout(entry.flashTimer);
    entry.last.classList.remove('flash-up', 'flash-down');
    // Restart the animation even when the same direction repeats.
    void entry.last.offsetWidth;
    entry.last.classList.add(direction === 'down' ? 'flash-down' : 'flash-up');
    entry.flashTimer = setTimeout(() => entry.last.classList.remove('flash-up', 'flash-down'), FLASH_MS);
  }

  function showQuote(quote) {
    const entry = rows.get(String(quote.symbol).toLowerCase());
    if (!entry) return;
    const previous = entry.price;
    entry.price = quote.quote;
    entry.name.replaceChildren(quote.company_name || '');
    entry.last.textContent = formatPrice(quote.quote);
    const change = changeFromOpen(quote);
    entry.change.textContent = change.text;
    entry.change.dataset.direction = change.direction;
    entry.time.replaceChildren(h('time', { datetime: quote.time }, formatInstant(quote.time)));
    if (previous !== undefined && previous !== quote.quote) {
      flash(entry, quote.quote < previous ? 'down' : 'up');
    }
  }

  function showRowError(error) {
    const entry = rows.get(String(error.symbol).toLowerCase());
    if (!entry) return;
    entry.name.replaceChildren(h('span', { class: 'row-error' }, rowErrorText(error)));
  }

  function closeStream() {
    if (source) source.close();
    source = null;
    if (probe) probe.abort();
    probe = null;
    clearTimeout(retryTimer);
    retryTimer = null;
  }

  function streamUrl() {
    return `/api/v1/stream${api.query({ q: list.join(',') })}`;
  }

  /** (Re)opens the one stream for the whole list, or none for an empty list. */
  function openStream() {
    closeStream();
    if (stopped || list.length === 0) {
      setState(null);
      return;
    }
    setState('connecting', 'Connecting…');
    const es = new EventSource(streamUrl());
    source = es;
    const live = () => {
      failures = 0;
      if (state.dataset.state !== 'live') setState('live', 'Live');
    };
    es.addEventListener('open', () => { if (source === es) live(); });
    es.addEventListener('quote', (event) => {
      if (source !== es) return;
      live();
      try {
        showQuote(JSON.parse(event.data));
      } catch {
        // A malformed event is skipped; the next one for the symbol replaces it.
      }
    });
    es.addEventListener('error', (event) => {
      if (source !== es) return;
      if (typeof event.data === 'string') {
        // The server's `event: error`: one symbol has no quote; the stream goes on.
        try {
          showRowError(JSON.parse(event.data));
        } catch {
          // Nothing to show without a symbol.
        }
        return;
      }
      if (es.readyState === EventSource.CONNECTING) {
        setState('reconnecting', 'Reconnecting…');
        return;
      }
      diagnose();
    });
  }

  /** The server refused the stream: ask once with fetch to learn why, then try again later. */
  async function diagnose() {
    if (source) source.close();
    source = null;
    setState('reconnecting', 'Reconnecting…');
    const controller = new AbortController();
    probe = controller;
    let problem = null;
    try {
      // Resolves once the headers arrive; the stream itself is dropped at once.
      await api.get(streamUrl(), { signal: controller.signal });
    } catch (err) {
      if (err.name === 'AbortError') return;
      // 401: api.js has already ended the session, which stops this watchlist.
      if (err.status === 401) return;
      problem = err.status === 429
        ? 'you have as many live streams open as the server allows (other tabs or windows showing the watchlist?).'
        : err.message;
    } finally {
      controller.abort();
      if (probe === controller) probe = null;
    }
    if (stopped) return;
    const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    failures += 1;
    if (problem) {
      setState('down', `Disconnected: ${problem} Trying again in ${Math.round(wait / 1000)} s.`);
    }
    retryTimer = setTimeout(openStream, wait);
  }

  function changed() {
    saveList(session.username, list);
    renderCount();
    openStream();
  }

  function removeSymbol(symbol) {
    const entry = rows.get(symbol);
    if (entry) {
      clearTimeout(entry.flashTimer);
      entry.row.remove();
      rows.delete(symbol);
    }
    list = list.filter((s) => s !== symbol);
    msg.clear();
    changed();
    input.input.focus();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const parsed = parseSymbol(input.input.value);
    if (!parsed.ok) {
      input.input.setAttribute('aria-invalid', 'true');
      msg.error(parsed.message);
      input.input.focus();
      return;
    }
    if (list.includes(parsed.symbol)) {
      msg.error(`${parsed.symbol.toUpperCase()} is already on the watchlist.`);
      return;
    }
    if (list.length >= cap) {
      msg.error(`The watchlist holds at most ${cap} symbols, the server's limit for one live stream: remove one first.`);
      return;
    }
    input.input.removeAttribute('aria-invalid');
    input.input.value = '';
    msg.clear();
    list = [...list, parsed.symbol];
    addRow(parsed.symbol);
    changed();
  });

  for (const symbol of list) addRow(symbol);
  renderCount();
  openStream();

  return {
    element,
    stop() {
      stopped = true;
      closeStream();
      for (const entry of rows.values()) clearTimeout(entry.flashTimer);
    },
  };
}
