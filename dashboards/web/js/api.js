// Talking to the agent's JSON API (documented in agent/api.py and the README).
//
// Every request is same-origin with the session cookie. Every POST carries the
// CSRF token from /api/session in X-CSRF-Token; the token is held here, set by
// the app after each /api/session fetch, so callers cannot forget it.

let csrfToken = null;
let onUnauthorized = null;

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called (once per burst) when a read answers 401: the session ended, the app shows the login form. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** An answer that was not 2xx. `serverError` is the agent's own `error` text, to show as is. */
export class HttpError extends Error {
  constructor(status, serverError) {
    super(serverError || `HTTP ${status}`);
    this.name = "HttpError";
    this.status = status;
    this.serverError = serverError || null;
  }
}

/** The request never got an answer (agent down, network gone). */
export class NetworkError extends Error {
  constructor(cause) {
    super("network error");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

async function request(method, path, body) {
  const headers = {Accept: "application/json"};
  const init = {method, credentials: "same-origin", headers, cache: "no-store"};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new NetworkError(exc);
  }
  let doc = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      doc = await response.json();
    } catch {
      doc = null; // a truncated body is reported through the status below
    }
  }
  if (!response.ok) {
    const error = doc && typeof doc.error === "string" ? doc.error : null;
    if (response.status === 401 && method === "GET" && onUnauthorized) onUnauthorized();
    throw new HttpError(response.status, error);
  }
  return doc;
}

export function getJSON(path) {
  return request("GET", path);
}

export function postJSON(path, body) {
  return request("POST", path, body);
}

/** Build "/api/x/<a>/<b>" with each segment escaped (subjects like "desc-1/oil" contain a slash). */
export function apiPath(...segments) {
  return "/api/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
}

/** Build a query string from an object, skipping null/undefined. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) q.set(k, String(v));
  return q.toString();
}
