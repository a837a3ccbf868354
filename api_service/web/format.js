// Numbers and times as people read them, in the browser's locale and time zone.

const price = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function formatPrice(value) {
  return typeof value === 'number' && Number.isFinite(value) ? price.format(value) : '–';
}

export function formatCount(value) {
  return typeof value === 'number' && Number.isFinite(value) ? whole.format(value) : '–';
}

const inBrowserZone = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'medium', timeStyle: 'medium',
});
const browserZoneName = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';

/** An RFC 3339 instant in the browser's zone, e.g. "6 Dec 2026, 21:00:09". */
export function formatInstant(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : inBrowserZone.format(date);
}

export function browserZone() {
  return browserZoneName;
}

/** Short date and time for table cells and chart labels. */
export function formatShort(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'short' }).format(date);
}

// The exchange behind a stooq suffix, for showing a quote's time as the market saw it.
// Symbols without a suffix (and unknown ones) are stooq's home market, Warsaw.
const MARKETS = {
  us: ['America/New_York', 'New York'],
  uk: ['Europe/London', 'London'],
  de: ['Europe/Berlin', 'Frankfurt'],
  fr: ['Europe/Paris', 'Paris'],
  hu: ['Europe/Budapest', 'Budapest'],
  jp: ['Asia/Tokyo', 'Tokyo'],
  hk: ['Asia/Hong_Kong', 'Hong Kong'],
  pl: ['Europe/Warsaw', 'Warsaw'],
};
const WARSAW = ['Europe/Warsaw', 'Warsaw'];

/**
 * The quote's time at its market: {text, place}. For symbols whose exchange is known from the
 * suffix (".us"), the instant converted to that exchange's zone; otherwise the feed's own
 * local date and time (Europe/Warsaw), exactly as it printed them.
 */
export function marketTime(symbol, quote) {
  const suffix = String(symbol).toLowerCase().split('.').pop();
  const [zone, place] = (symbol.includes('.') && MARKETS[suffix]) || WARSAW;
  const date = new Date(quote.time);
  if (zone !== 'Europe/Warsaw' && !Number.isNaN(date.getTime())) {
    try {
      const text = new Intl.DateTimeFormat(undefined, {
        dateStyle: 'medium', timeStyle: 'medium', timeZone: zone,
      }).format(date);
      return { text, place };
    } catch {
      // A browser without that zone's data falls back to the feed's own time.
    }
  }
  return { text: `${quote.local_date} ${quote.local_time}`, place: 'Warsaw' };
}
