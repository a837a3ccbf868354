// Charts drawn as SVG by the page: a line of close prices over time and a bar chart of
// counts. Each is one <svg role="img"> whose aria-label says what it shows; the same numbers
// are in a table or list next to it for anyone who cannot see the drawing.

import { s } from './dom.js';
import { formatCount, formatPrice, formatShort } from './format.js';

const WIDTH = 640;
const MIN_WIDTH = 300;
const HEIGHT = 260;

/**
 * The drawing's width in SVG units: the box it goes in, in CSS pixels (so its 12px text is
 * 12px on a phone too), between MIN_WIDTH and WIDTH.
 */
function fit(boxWidth) {
  const w = Math.round(boxWidth || WIDTH);
  return Math.max(MIN_WIDTH, Math.min(WIDTH, w));
}
const PAD = { top: 16, right: 16, bottom: 36, left: 64 };

/** Three "nice" tick values spanning [min, max]. */
function ticks(min, max) {
  if (min === max) return [min];
  return [min, (min + max) / 2, max];
}

/**
 * points: [{time: ISO string, value: number}] in any order; label: the aria-label.
 * Returns an <svg>.
 */
export function lineChart(points, label, boxWidth) {
  const width = fit(boxWidth);
  const sorted = [...points].sort((a, b) => new Date(a.time) - new Date(b.time));
  const times = sorted.map((p) => new Date(p.time).getTime());
  const values = sorted.map((p) => p.value);
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) { low -= 1; high += 1; }
  const t0 = times[0];
  const t1 = times[times.length - 1];
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + (t1 === t0 ? plotW / 2 : ((t - t0) / (t1 - t0)) * plotW);
  const y = (v) => PAD.top + (1 - (v - low) / (high - low)) * plotH;

  const grid = ticks(low, high).map((v) => [
    s('line', { class: 'grid', x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v) }),
    s('text', { class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatPrice(v)),
  ]);
  const path = sorted
    .map((p, i) => `${i === 0 ? 'M' : 'L'}${x(times[i]).toFixed(1)},${y(p.value).toFixed(1)}`)
    .join(' ');
  // Dots only while they stay apart; past that the line says it all.
  const dots = sorted.length > 60 ? [] : sorted.map((p, i) => s('circle', { class: 'dot', cx: x(times[i]), cy: y(p.value), r: 3 },
    s('title', {}, `${formatShort(p.time)}: ${formatPrice(p.value)}`)));

  return s('svg', {
    class: 'chart', viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  },
  s('title', {}, label),
  grid,
  s('line', { class: 'axis-line', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: HEIGHT - PAD.bottom }),
  s('line', { class: 'axis-line', x1: PAD.left, x2: width - PAD.right, y1: HEIGHT - PAD.bottom, y2: HEIGHT - PAD.bottom }),
  s('text', { class: 'axis', x: PAD.left, y: HEIGHT - 12, 'text-anchor': 'start' }, formatShort(sorted[0].time)),
  sorted.length > 1
    ? s('text', { class: 'axis', x: width - PAD.right, y: HEIGHT - 12, 'text-anchor': 'end' },
      formatShort(sorted[sorted.length - 1].time))
    : null,
  sorted.length > 1 ? s('path', { class: 'line', d: path }) : null,
  dots);
}

/** items: [{label, value}] highest first; label: the aria-label. Returns an <svg>. */
export function barChart(items, label, boxWidth) {
  const width = fit(boxWidth);
  const rowH = 36;
  const left = 120;
  const right = 64;
  const height = Math.max(1, items.length) * rowH + 8;
  const max = Math.max(1, ...items.map((i) => i.value));
  const plotW = width - left - right;
  const bars = items.map((item, i) => {
    const w = Math.max(2, (item.value / max) * plotW);
    const top = 4 + i * rowH;
    return s('g', {},
      s('text', { class: 'axis', x: left - 8, y: top + rowH / 2 + 4, 'text-anchor': 'end' }, item.label),
      s('rect', { class: 'bar', x: left, y: top + 6, width: w, height: rowH - 12, rx: 3 },
        s('title', {}, `${item.label}: ${formatCount(item.value)}`)),
      s('text', { class: 'value', x: left + w + 6, y: top + rowH / 2 + 4 }, formatCount(item.value)));
  });
  return s('svg', {
    class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label,
  },
  s('title', {}, label),
  items.length === 0
    ? s('text', { class: 'axis', x: width / 2, y: height / 2 + 4, 'text-anchor': 'middle' }, 'No requests yet')
    : bars);
}
