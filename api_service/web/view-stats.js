// Admin stats: the five most requested stocks as a bar chart and a table, refreshed on demand
// and (while the box is ticked and the tab is visible) every 5 seconds.

import * as api from './api.js';
import { barChart } from './chart.js';
import { clear, h, messages, uid } from './dom.js';
import { formatCount } from './format.js';

const REFRESH_MS = 5000;

export function mount(main) {
  const controller = new AbortController();
  let timer = null;
  let inFlight = false;
  const msg = messages();
  const chartBox = h('div', { class: 'chart-box' });
  const tbody = h('tbody', {});
  const table = h('table', { class: 'data' },
    h('caption', {}, 'Most requested stocks'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Rank'),
      h('th', { scope: 'col' }, 'Symbol'),
      h('th', { scope: 'col', class: 'num' }, 'Times requested'))),
    tbody);
  const updated = h('p', { class: 'muted' });
  const refresh = h('button', { type: 'button' }, 'Refresh');
  const autoId = uid('auto');
  const auto = h('input', { type: 'checkbox', id: autoId, checked: true });

  async function load() {
    if (inFlight) return;
    inFlight = true;
    refresh.disabled = true;
    try {
      const { data } = await api.get('/api/v1/stats', { signal: controller.signal });
      const items = (Array.isArray(data) ? data : []).map((r) => ({ label: r.stock, value: r.times_requested }));
      clear(chartBox);
      chartBox.append(barChart(items, 'Top 5 requested stocks', chartBox.clientWidth));
      clear(tbody);
      items.forEach((item, i) => tbody.append(h('tr', {},
        h('td', {}, String(i + 1)), h('td', {}, item.label), h('td', { class: 'num' }, formatCount(item.value)))));
      if (items.length === 0) {
        tbody.append(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No quotes requested yet.')));
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      msg.clear();
    } catch (err) {
      if (err.name === 'AbortError') return;
      msg.error(err.message);
    } finally {
      inFlight = false;
      refresh.disabled = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    if (auto.checked) {
      timer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
    }
  }

  refresh.addEventListener('click', load);
  auto.addEventListener('change', schedule);

  main.append(
    h('h1', {}, 'Stats'),
    h('div', { class: 'toolbar' },
      refresh,
      h('div', { class: 'check' }, auto, h('label', { for: autoId }, 'Refresh automatically')),
      updated),
    ...msg.elements,
    h('div', { class: 'card' }, chartBox),
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Most requested stocks', tabindex: '0' }, table),
  );
  load();
  schedule();
  return () => { clearInterval(timer); controller.abort(); };
}
