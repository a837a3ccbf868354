// Reading numbers the way a page may show them: grouped thousands, trailing zeros, two
// decimals for prices.

/** Whether `text` shows `value` (a decimal string from the feed) in a usual number format. */
export function showsNumber(text, value) {
    const number = Number(value);
    // "50,759,496" or "50 759 496" → "50759496": group separators between digits removed.
    const plain = text.replace(/(\d)[,\u00a0\u202f ](?=\d{3}\b)/g, '$1');
    const candidates = new Set([
        String(value),
        String(number),
        number.toFixed(2),
        number.toFixed(3),
    ]);
    return [...candidates].some((c) => new RegExp(`(^|[^\\d.])${c.replace('.', '\\.')}(?![\\d])`).test(plain));
}

/** Whether `text` shows the time of day `hhmmss` ("17:00:09"), on a 24-hour or 12-hour clock. */
export function showsTime(text, hhmmss) {
    const [h, m, s] = hhmmss.split(':').map(Number);
    const two = (n) => String(n).padStart(2, '0');
    const twelve = `${h % 12 === 0 ? 12 : h % 12}:${two(m)}:${two(s)}\\s?${h < 12 ? 'AM' : 'PM'}`;
    return new RegExp(`(^|\\D)(${two(h)}:${two(m)}:${two(s)}|${twelve})`, 'i').test(text.replace(/\u202f/g, ' '));
}

/** Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF) into rows of fields. */
export function parseCsv(body) {
    const rows = [];
    let row = [];
    let field = '';
    let quoted = false;
    for (let i = 0; i < body.length; i++) {
        const c = body[i];
        if (quoted) {
            if (c === '"' && body[i + 1] === '"') {
                field += '"';
                i++;
            } else if (c === '"') {
                quoted = false;
            } else {
                field += c;
            }
        } else if (c === '"') {
            quoted = true;
        } else if (c === ',') {
            row.push(field);
            field = '';
        } else if (c === '\n' || c === '\r') {
            if (c === '\r' && body[i + 1] === '\n') {
                i++;
            }
            row.push(field);
            rows.push(row);
            row = [];
            field = '';
        } else {
            field += c;
        }
    }
    if (field !== '' || row.length > 0) {
        row.push(field);
        rows.push(row);
    }
    return rows;
}
