// History: the user's own quotes, newest first, a page at a time through the API's keyset
// cursor (the Link header's next URL, never an offset), filtered by symbol, downloadable as
// CSV, and a chart of one symbol's close over time.

import * as api from './api.js';
import { lineChart } from './chart.js';
import { clear, h, labelled, messages, uid } from './dom.js';
import { formatInstant, formatPrice, formatShort } from './format.js';
import { parseSymbol } from './symbol.js';

const PAGE_SIZE = 50;
/** The chart shows at most this many of the symbol's latest quotes (one API page). */
const CHART_POINTS = 1000;

export function mount(main) {
  const controller = new AbortController();
  const signal = controller.signal;
  let filter = '';
  let next = null;
  let generation = 0;
  const symbols = new Set();
  const msg = messages();
  const count = h('p', { class: 'count muted' });
  const chartMsg = messages();

  // Filter
  const filterInput = labelled('Filter by symbol', {
    name: 'symbol', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', maxlength: 64,
  });
  const clearButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Clear filter');
  const filterForm = h('form', { class: 'inline-form', novalidate: true, role: 'search', 'aria-label': 'Filter history' },
    filterInput.field, h('button', { type: 'submit' }, 'Apply filter'), clearButton);
  const csv = h('a', { class: 'button-link', download: 'history.csv' }, 'Download CSV');

  // Table
  const tbody = h('tbody', {});
  const table = h('table', { class: 'data', tabindex: '-1' },
    h('caption', {}, 'Your quote history'),
    h('thead', {}, h('tr', {}, ['Date', 'Symbol', 'Name', 'Open', 'High', 'Low', 'Close']
      .map((c, i) => h('th', { scope: 'col', class: i >= 3 ? 'num' : undefined }, c)))),
    tbody);
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');

  // Chart
  const selectId = uid('chart-symbol');
  const select = h('select', { id: selectId, name: 'chart-symbol' });
  const chartBox = h('div', { class: 'chart-box' });
  const chartSection = h('section', { 'aria-labelledby': 'chart-heading', class: 'card' },
    h('h2', { id: 'chart-heading' }, 'Close over time'),
    h('div', { class: 'field' }, h('label', { for: selectId }, 'Chart symbol'), select),
    ...chartMsg.elements,
    chartBox);

  function updateCsvLink() {
    csv.setAttribute('href', `/api/v1/users/history.csv${api.query({ symbol: filter })}`);
  }

  function addRows(rows) {
    for (const row of rows) {
      symbols.add(row.symbol);
      tbody.append(h('tr', {},
        h('td', {}, h('time', { datetime: row.date }, formatInstant(row.date))),
        h('td', {}, row.symbol),
        h('td', {}, row.name),
        h('td', { class: 'num' }, formatPrice(row.open)),
        h('td', { class: 'num' }, formatPrice(row.high)),
        h('td', { class: 'num' }, formatPrice(row.low)),
        h('td', { class: 'num' }, formatPrice(row.close))));
    }
  }

  /** Keeps the chosen symbol while it is listed, else picks the most recently quoted one. */
  function updateSymbolOptions() {
    const list = [...symbols].sort();
    const newest = (tbody.querySelector('tr td:nth-child(2)') || {}).textContent;
    const chosen = list.includes(select.value) ? select.value : newest;
    if (list.join() !== [...select.options].map((o) => o.value).join()) {
      clear(select);
      for (const sym of list) select.append(h('option', { value: sym }, sym));
    }
    if (list.includes(chosen)) select.value = chosen;
  }

  async function loadPage(url, { reset }) {
    const mine = reset ? ++generation : generation;
    more.disabled = true;
    tbody.setAttribute('aria-busy', 'true');
    try {
      const { data, headers } = await api.get(url, { signal });
      if (mine !== generation) return;
      if (reset) { clear(tbody); symbols.clear(); }
      // Defensive: the filter is applied by the server; rows of other symbols never show.
      const rows = (Array.isArray(data) ? data : [])
        .filter((r) => !filter || r.symbol.toLowerCase() === filter);
      addRows(rows);
      next = api.nextLink(headers);
      more.hidden = !next;
      if (tbody.children.length === 0) {
        tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' },
          filter ? `No quotes for ${filter.toUpperCase()} in your history.` : 'No quotes yet: get one on the Quote page.')));
      }
      const shown = tbody.querySelectorAll('time').length;
      count.textContent = `${shown} ${shown === 1 ? 'quote' : 'quotes'} shown${next ? '; more to load' : ''}.`;
      const hadSymbols = select.options.length > 0;
      updateSymbolOptions();
      if (reset || !hadSymbols) drawChart();
    } catch (err) {
      if (err.name === 'AbortError') return;
      msg.error(err.message);
    } finally {
      more.disabled = false;
      tbody.removeAttribute('aria-busy');
    }
  }

  async function drawChart() {
    const sym = select.value;
    clear(chartBox);
    chartMsg.clear();
    chartSection.hidden = !sym;
    if (!sym) return;
    const wanted = sym.toLowerCase();
    try {
      const { data } = await api.get(
        `/api/v1/users/history${api.query({ symbol: wanted, limit: CHART_POINTS })}`, { signal },
      );
      if (select.value !== sym) return;
      const points = (Array.isArray(data) ? data : [])
        .filter((r) => r.symbol.toLowerCase() === wanted)
        .map((r) => ({ time: r.date, value: r.close }));
      clear(chartBox);
      if (points.length === 0) {
        chartMsg.status(`No quotes of ${sym} to draw.`);
        return;
      }
      const closes = points.map((p) => p.value);
      const first = points[points.length - 1].time;
      const last = points[0].time;
      const label = `Close price of ${sym} over ${points.length} ${points.length === 1 ? 'quote' : 'quotes'}, `
        + `from ${formatShort(first)} to ${formatShort(last)}; lowest ${formatPrice(Math.min(...closes))}, `
        + `highest ${formatPrice(Math.max(...closes))}, latest ${formatPrice(points[0].value)}`;
      chartBox.append(lineChart(points, label, chartBox.clientWidth));
    } catch (err) {
      if (err.name === 'AbortError') return;
      chartMsg.error(err.message);
    }
  }

  function applyFilter(value) {
    filter = value;
    clearButton.hidden = !filter;
    updateCsvLink();
    next = null;
    more.hidden = true;
    loadPage(`/api/v1/users/history${api.query({ limit: PAGE_SIZE, symbol: filter })}`, { reset: true });
  }

  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const raw = filterInput.input.value;
    if (raw.trim() === '') { applyFilter(''); return; }
    const parsed = parseSymbol(raw);
    if (!parsed.ok) {
      filterInput.input.setAttribute('aria-invalid', 'true');
      msg.error(parsed.message);
      filterInput.input.focus();
      return;
    }
    filterInput.input.removeAttribute('aria-invalid');
    applyFilter(parsed.symbol);
  });
  clearButton.addEventListener('click', () => {
    filterInput.input.value = '';
    filterInput.input.removeAttribute('aria-invalid');
    applyFilter('');
    filterInput.input.focus();
  });
  more.addEventListener('click', async () => {
    if (!next) return;
    await loadPage(next, { reset: false });
    if (more.hidden) table.focus();
  });
  select.addEventListener('change', drawChart);

  chartSection.hidden = true;
  main.append(
    h('h1', {}, 'History'),
    h('div', { class: 'toolbar' }, filterForm, csv),
    ...msg.elements,
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Your quote history', tabindex: '0' }, table),
    count,
    more,
    chartSection,
  );
  updateCsvLink();
  applyFilter('');
  return () => controller.abort();
}
