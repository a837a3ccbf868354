// The symbol rules of shared/src/symbol.rs, applied before anything is sent: trimmed,
// lower-cased, 1-20 of A-Z a-z 0-9 . ^ - _.

export const MAX_SYMBOL_LEN = 20;
const ALLOWED = /^[A-Za-z0-9.^_-]$/;

/** Returns {ok: true, symbol} (normalised) or {ok: false, message} saying what is wrong. */
export function parseSymbol(raw) {
  const trimmed = String(raw ?? '').trim();
  if (trimmed === '') {
    return { ok: false, message: 'Enter a symbol, for example aapl.us.' };
  }
  for (const ch of trimmed) {
    if (!ALLOWED.test(ch)) {
      const shown = ch.trim() === '' ? 'a space' : `"${ch}"`;
      return {
        ok: false,
        message: `A symbol cannot contain ${shown}: use only letters, digits and . ^ - _`,
      };
    }
  }
  if (trimmed.length > MAX_SYMBOL_LEN) {
    return { ok: false, message: `A symbol has at most ${MAX_SYMBOL_LEN} characters.` };
  }
  return { ok: true, symbol: trimmed.toLowerCase() };
}
