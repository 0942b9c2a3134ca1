// The REST side of the contract: `fetch` with the bearer token, JSON in and
// out, every failure an ApiError carrying the status and the server's code.
//
// The token lives here (`credentials.token`); app.js sets it on sign-in and
// clears it on sign-out.

export const API = '/api/v1';

export const credentials = { token: null };

export class ApiError extends Error {
  constructor(status, code, message, field, token) {
    super(message);
    Object.assign(this, { status, code, field, token });
  }
}

export async function api(method, path, body) {
  const token = credentials.token;
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  let text = '';
  try {
    res = await fetch(path, init);
    text = await res.text();
  } catch (_) {
    throw new ApiError(0, 'network', 'cannot reach the server', null, token);
  }
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { /* non-JSON body, e.g. a proxy's error page */ }
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    const message = e.message || `${res.status} ${res.statusText}`.trim();
    throw new ApiError(res.status, e.code || `http_${res.status}`, message, e.field, token);
  }
  return data;
}

const KNOWN_FIELDS = ['symbol', 'quantity', 'purchase_price', 'memo', 'name', 'description'];

/** Which input an error belongs to: the body's `field` if any, else the "field: ..." prefix
 *  the server puts on validation messages, else the form's main input. */
export function errorField(err, fallback) {
  if (err.field && KNOWN_FIELDS.includes(err.field)) return err.field;
  const m = /^([a-z_]+):/.exec(err.message || '');
  return m && KNOWN_FIELDS.includes(m[1]) ? m[1] : fallback;
}
