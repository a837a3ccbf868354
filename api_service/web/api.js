// The one way the page talks to the API: same-origin fetch with the session cookie, the CSRF
// token on every state-changing request, and every failure turned into an ApiError whose
// message a person can act on.

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

let csrfToken = null;
let sessionLost = () => {};

/** The token from GET/POST /api/v1/session, sent as X-CSRF-Token; null when signed out. */
export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Called when a signed-in request is answered 401: the session expired or was revoked. */
export function onSessionLost(callback) {
  sessionLost = callback;
}

export class ApiError extends Error {
  constructor({ status, code, message, serverMessage, retryAfter, requestId }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.serverMessage = serverMessage || '';
    this.retryAfter = retryAfter;
    this.requestId = requestId || '';
  }
}

function seconds(n) {
  return n === 1 ? '1 second' : `${n} seconds`;
}

/** What to tell a person for an error status and code (views refine a few in context). */
export function humanMessage(status, code, serverMessage, retryAfter, requestId) {
  const ref = requestId ? ` (reference ${requestId})` : '';
  switch (status) {
    case 0:
      return 'Cannot reach the server. Check your connection and try again.';
    case 400:
      if (code === 'invalid_symbol') return `That symbol is not valid: ${serverMessage}`;
      return `The request was not accepted: ${serverMessage}`;
    case 401:
      return 'Your session has ended. Please sign in again.';
    case 403:
      if (code === 'csrf_failed') return 'Your session could not be verified. Please sign in again.';
      return 'You are not allowed to do that: this is for admins only.';
    case 404:
      return serverMessage ? `Not found: ${serverMessage}` : 'Not found.';
    case 408:
      return 'The request took too long. Try again.';
    case 409:
      if (/last admin/i.test(serverMessage)) {
        return 'This is the last admin: make another user an admin first.';
      }
      return `That conflicts with existing data: ${serverMessage}`;
    case 413:
      return 'That is too much data to send.';
    case 415:
      return 'The server could not read the request.';
    case 422:
      return `Please check the form: ${serverMessage}`;
    case 429:
      return retryAfter
        ? `Too many attempts: try again in ${seconds(retryAfter)}.`
        : 'Too many attempts: wait a moment and try again.';
    case 502:
      if (code === 'upstream_rejected') return `The quote feed refused the request: ${serverMessage}`;
      if (code === 'upstream_unavailable') return 'The quote feed is down or not answering. Try again later.';
      return 'The quote service failed. Try again later.';
    case 503:
      if (code === 'quote_service_unavailable') return 'The quote service is unavailable right now. Try again shortly.';
      if (code === 'database_unavailable') return 'The database is unavailable right now. Try again shortly.';
      return 'The server is busy. Try again in a moment.';
    case 504:
      return 'The quote did not arrive in time. Try again.';
    default:
      if (status >= 500) return `Something went wrong on the server${ref}.`;
      return `Unexpected answer from the server (HTTP ${status})${ref}.`;
  }
}

async function readBody(response) {
  const type = response.headers.get('content-type') || '';
  if (response.status === 204 || !type.includes('application/json')) return null;
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * Sends one request. `session: false` marks the sign-in calls themselves, whose 401 means
 * wrong credentials rather than a lost session. Returns {status, data, headers}; throws
 * ApiError (or the AbortError of `signal`).
 */
export async function request(method, path, { body, signal, session = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (UNSAFE.has(method) && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError({ status: 0, code: 'network', message: humanMessage(0) });
  }
  const data = await readBody(response);
  if (response.ok) return { status: response.status, data, headers: response.headers };

  const error = (data && data.error) || {};
  const retryAfter = Number.parseInt(response.headers.get('retry-after') || '', 10) || undefined;
  const requestId = error.request_id || response.headers.get('x-request-id') || '';
  const code = error.code || `http_${response.status}`;
  const serverMessage = error.message || '';
  const failure = new ApiError({
    status: response.status,
    code,
    message: humanMessage(response.status, code, serverMessage, retryAfter, requestId),
    serverMessage,
    retryAfter,
    requestId,
  });
  if (session && (response.status === 401 || code === 'csrf_failed')) sessionLost(failure);
  throw failure;
}

export const get = (path, options) => request('GET', path, options);
export const post = (path, body, options) => request('POST', path, { ...options, body });
export const put = (path, body, options) => request('PUT', path, { ...options, body });
export const patch = (path, body, options) => request('PATCH', path, { ...options, body });
export const del = (path, options) => request('DELETE', path, options);

/** The `rel="next"` URL of a Link header, only if it is a path on this API. */
export function nextLink(headers) {
  const link = headers.get('link');
  if (!link) return null;
  for (const part of link.split(',')) {
    const match = /<([^>]*)>\s*;\s*rel="?next"?/.exec(part);
    if (match && match[1].startsWith('/api/v1/')) return match[1];
  }
  return null;
}

/** A query string from an object, skipping empty values: query({a: 1, b: ''}) === '?a=1'. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
