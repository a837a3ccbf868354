// Quote: one symbol in, its latest quote out. The symbol is checked with the API's own rules
// before anything is sent; recent symbols (per user, in localStorage) are one click away.
// Below, the live watchlist (watchlist.js), whose stream ends with the view.

import * as api from './api.js';
import { clear, h, labelled, messages } from './dom.js';
import { browserZone, formatCount, formatInstant, formatPrice, marketTime } from './format.js';
import { parseSymbol } from './symbol.js';
import { watchlist } from './watchlist.js';

const RECENT_MAX = 8;

function recentKey(username) {
  return `stock-quotes.recent.${username}`;
}

function loadRecent(username) {
  try {
    const list = JSON.parse(window.localStorage.getItem(recentKey(username)) || '[]');
    return Array.isArray(list) ? list.filter((s) => parseSymbol(s).ok).slice(0, RECENT_MAX) : [];
  } catch {
    return [];
  }
}

function saveRecent(username, list) {
  try {
    window.localStorage.setItem(recentKey(username), JSON.stringify(list));
  } catch {
    // Storage full or disabled: recents just do not persist.
  }
}

function quoteMessage(err, symbol) {
  if (err.status === 404) return `No such symbol: ${symbol.toUpperCase()}. Check the spelling and the market suffix (for example .us).`;
  return err.message;
}

export function mount(main, { session }) {
  let controller = null;
  let recent = loadRecent(session.username);
  const msg = messages();
  const symbol = labelled('Symbol', {
    name: 'symbol', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false',
    maxlength: 64, placeholder: 'aapl.us',
  }, 'Letters, digits and . ^ - _, for example aapl.us, msft.us or ^spx.');
  const button = h('button', { type: 'submit' }, 'Get quote');
  const form = h('form', { class: 'inline-form', novalidate: true }, symbol.field, button);
  const result = h('section', { 'aria-label': 'Quote result', class: 'card quote-result', hidden: true });
  const recentList = h('ul', { 'aria-label': 'Recent symbols', class: 'chips' });
  const recentSection = h('section', { 'aria-labelledby': 'recent-heading' },
    h('h2', { id: 'recent-heading' }, 'Recent symbols'), recentList);

  function renderRecent() {
    clear(recentList);
    recentSection.hidden = recent.length === 0;
    for (const item of recent) {
      recentList.append(h('li', {}, h('button', {
        type: 'button', class: 'chip', onclick: () => { symbol.input.value = item; fetchQuote(item); },
      }, item)));
    }
  }

  function remember(sym) {
    recent = [sym, ...recent.filter((s) => s !== sym)].slice(0, RECENT_MAX);
    saveRecent(session.username, recent);
    renderRecent();
  }

  function showQuote(q) {
    clear(result);
    const market = marketTime(q.symbol, q);
    const row = (label, value, wide) => h('div', { class: wide ? 'wide' : undefined }, h('dt', {}, label), h('dd', {}, value));
    result.append(
      h('div', { class: 'quote-head' },
        h('h2', {}, q.symbol),
        h('p', { class: 'company' }, q.company_name)),
      h('p', { class: 'close' }, h('span', { class: 'label' }, 'Close '), h('span', { class: 'price' }, formatPrice(q.quote))),
      h('dl', { class: 'facts' },
        row('Open', formatPrice(q.open)),
        row('High', formatPrice(q.high)),
        row('Low', formatPrice(q.low)),
        row('Volume', q.volume === undefined || q.volume === null ? 'not reported' : formatCount(q.volume)),
        row(`Time (${browserZone()})`, h('time', { datetime: q.time }, formatInstant(q.time)), true),
        row(market.label, market.text, true)),
    );
    result.hidden = false;
  }

  async function fetchQuote(raw) {
    const parsed = parseSymbol(raw);
    if (!parsed.ok) {
      symbol.input.setAttribute('aria-invalid', 'true');
      msg.error(parsed.message);
      symbol.input.focus();
      return;
    }
    symbol.input.removeAttribute('aria-invalid');
    if (controller) controller.abort();
    controller = new AbortController();
    button.disabled = true;
    result.setAttribute('aria-busy', 'true');
    msg.status(`Getting the quote for ${parsed.symbol}…`);
    try {
      const { data } = await api.get(`/api/v1/stock${api.query({ q: parsed.symbol })}`, { signal: controller.signal });
      msg.status(`Quote for ${data.symbol}: close ${formatPrice(data.quote)}.`);
      showQuote(data);
      remember(parsed.symbol);
    } catch (err) {
      if (err.name === 'AbortError') return;
      result.hidden = true;
      clear(result);
      msg.error(quoteMessage(err, parsed.symbol));
    } finally {
      button.disabled = false;
      result.removeAttribute('aria-busy');
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    fetchQuote(symbol.input.value);
  });

  const watch = watchlist({ session });
  main.append(h('h1', {}, 'Quote'), form, ...msg.elements, result, recentSection, watch.element);
  renderRecent();
  symbol.input.focus();
  return () => {
    if (controller) controller.abort();
    watch.stop();
  };
}
