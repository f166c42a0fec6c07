// coffee-telemetry built-in dashboard: the app shell.
//
// Theory of operation
// -------------------
// The agent serves the same index.html for every page URL; this module reads
// location.pathname, builds the header, and mounts one page module (js/*.js).
// /lotes/<code> (one lot, the code percent-encoded) is the one page under a prefix;
// it shows in the navigation as its parent, Lotes.
// A page module is {root, load(reason), onEvent(type, data), destroy()}: `load`
// fetches its JSON and renders into `root`, updating nodes in place on later
// calls so that refetches do not disturb forms or charts.
//
// Data flow: /api/session first (who we are, CSRF token, site name and time zone,
// default language), then one EventSource on /api/events for the life of the
// tab, then the page's GET when the stream's first `hello` arrives (so no event
// falls between the snapshot and the subscription). Events go to the mounted
// page; a later `hello` (the stream reconnected) refetches, because whatever
// happened while disconnected is lost. Refetches go through one throttle (at
// most two a second), however many readings arrive.
//
// Changing language or logging in/out re-mounts the page from scratch: rare
// actions, and rebuilding is simpler than teaching every node to re-translate.
// Moving between pages is client-side (pushState) so the live stream stays up.
//
// Nothing here uses innerHTML: see js/dom.js for why.

import {LANGS, getLang, normaliseLang, otherLang, setLang, t} from "./i18n.js";
import {HttpError, getJSON, postJSON, setCsrf, setUnauthorizedHandler} from "./js/api.js";
import {h, setText} from "./js/dom.js";
import {setTimeZone, syncClock} from "./js/format.js";
import {errorText, tickRelative} from "./js/widgets.js";
import {createArmazem} from "./js/armazem.js";
import {createDescascadores} from "./js/descascadores.js";
import {createDispositivos} from "./js/dispositivos.js";
import {createAlertas} from "./js/alertas.js";
import {createLotes} from "./js/lotes.js";
import {createLote} from "./js/lote.js";

const PAGES = [
  {id: "armazem", path: "/", create: createArmazem},
  {id: "descascadores", path: "/descascadores", create: createDescascadores},
  {id: "dispositivos", path: "/dispositivos", create: createDispositivos},
  {id: "alertas", path: "/alertas", create: createAlertas},
  {id: "lotes", path: "/lotes", create: createLotes},
  // Not in the nav bar: reached from Lotes (and links to a lot); "/lotes/<code>".
  {id: "lote", path: "/lotes/", prefix: true, nav: "lotes", create: createLote},
];
const LANG_KEY = "coffee-telemetry.lang";
const REFETCH_GAP_MS = 500; // ≤ 2 refetches a second, however fast events come
const RETRY_MS = 5000;
const HELLO_WAIT_MS = 1500;
const SSE_EVENTS = ["reading", "alert", "lots", "devices", "service"];

const app = {
  session: null,
  page: null, // the mounted page module
  events: null, // the EventSource
  live: false,
  hellos: 0, // `hello` events on the current stream
  awaitingHello: null, // a freshly mounted page that loads on the stream's first hello
  openAlerts: 0,
};

const headerEl = document.querySelector("[data-app-header]");
const mainEl = document.querySelector("main");
const errorBox = h("div", {class: "page-error", role: "alert", testid: "page-error", hidden: true});

// ---- language -------------------------------------------------------------------

function storedLang() {
  try {
    return normaliseLang(localStorage.getItem(LANG_KEY));
  } catch {
    return null; // storage disabled (kiosk/private mode): fall through to the site default
  }
}

function storeLang(lang) {
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch {
    // not fatal: the choice just does not survive a reload
  }
}

/**
 * ?lang= in the URL beats the stored choice, which beats the site's default.
 * The URL's choice is not stored: it belongs to that address (a TV's kiosk URL,
 * say), and moving between pages keeps the query string anyway.
 */
function chooseLang(siteDefault) {
  const fromUrl = normaliseLang(new URLSearchParams(location.search).get("lang"));
  return fromUrl || storedLang() || normaliseLang(siteDefault) || LANGS[0];
}

function toggleLang() {
  const next = otherLang();
  setLang(next);
  storeLang(next);
  const url = new URL(location.href);
  if (url.searchParams.has("lang")) {
    url.searchParams.set("lang", next);
    history.replaceState(history.state, "", url);
  }
  renderAll();
}

// ---- refetch throttle --------------------------------------------------------------

// One page load in flight at a time; requests during it collapse into one more
// run after it. A "hello" reason is kept over plain ones (it also reloads charts).
const refetcher = {
  timer: 0,
  running: false,
  pending: null,
  last: 0,
  request(reason = "event") {
    if (this.pending !== "hello") this.pending = reason;
    if (this.running || this.timer) return;
    const wait = Math.max(0, this.last + REFETCH_GAP_MS - Date.now());
    this.timer = setTimeout(() => this.run(), wait);
  },
  cancel() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.pending = null;
  },
  async run() {
    this.timer = 0;
    const reason = this.pending;
    this.pending = null;
    if (!reason || !app.page) return;
    this.running = true;
    this.last = Date.now();
    await loadPage(app.page, reason);
    this.running = false;
    if (this.pending) this.request(this.pending);
  },
};

// ---- session ----------------------------------------------------------------------

async function fetchSession() {
  const session = await getJSON("/api/session");
  app.session = session;
  setCsrf(session.csrf);
  setTimeZone(session.site && session.site.timezone);
  return session;
}

function needsLogin() {
  const s = app.session;
  return !s.read_open && !s.user;
}

/** A write answered 401/403 or a read answered 401: see who we are now and redraw if it changed. */
let authCheck = null;
function authLost() {
  if (authCheck) return authCheck;
  authCheck = (async () => {
    const before = app.session && app.session.user;
    try {
      await fetchSession();
      const userChanged = (app.session.user || null) !== (before || null);
      // A page still showing while reads now need a login: replace it with the login form
      // (but never redraw a login form someone may be typing into).
      if (userChanged || (needsLogin() && app.page)) renderAll();
    } catch {
      // the agent is unreachable; the live indicator already says so
    } finally {
      authCheck = null;
    }
  })();
  return authCheck;
}

// ---- header -------------------------------------------------------------------------

function currentPage() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  return (
    PAGES.find((p) => !p.prefix && p.path === path) ||
    PAGES.find((p) => p.prefix && path.startsWith(p.path) && path.length > p.path.length) ||
    PAGES[0]
  );
}

function renderHeader() {
  const s = app.session;
  const page = currentPage();
  const siteName = (s && s.site && (s.site.name || s.site.id)) || t("app.title");
  document.title = `${t(`nav.${page.id}`)} · ${siteName}`;

  const nav = h(
    "nav",
    {class: "nav", "aria-label": t("nav.label"), hidden: !s || needsLogin()},
    h(
      "ul",
      {class: "nav__list"},
      ...PAGES.filter((p) => !p.prefix).map((p) =>
        h(
          "li",
          null,
          h(
            "a",
            {
              class: "nav__link",
              href: p.path,
              testid: `nav-${p.id}`,
              data: {nav: p.id},
              "aria-current": p.id === (page.nav || page.id) ? "page" : null,
            },
            t(`nav.${p.id}`),
            p.id === "alertas" ? h("span", {class: "nav__count", "aria-hidden": "true", hidden: true}) : null,
          ),
        ),
      ),
    ),
  );

  const live = h(
    "span",
    // Hidden behind the login form: "disconnected" in red there would only alarm.
    {
      class: "live",
      testid: "live-status",
      role: "status",
      data: {state: app.live ? "open" : "closed"},
      hidden: !s || needsLogin(),
    },
    h("span", {class: "live__text"}),
  );

  const langButton = h(
    "button",
    {
      type: "button",
      class: "btn btn--ghost",
      testid: "lang-toggle",
      lang: otherLang(),
      title: t("lang.switch"),
      on: {click: toggleLang},
    },
    t("lang.other"),
  );

  const account = h("div", {class: "account"});
  if (s && s.user) {
    account.append(
      h(
        "span",
        {class: "account__user"},
        h("span", {class: "sr-only"}, t("session.user", {user: ""})),
        h("span", {testid: "session-user"}, s.user),
      ),
      h("button", {type: "button", class: "btn btn--ghost", testid: "logout", on: {click: logout}}, t("logout")),
    );
  } else if (s && s.login_enabled && !needsLogin()) {
    account.append(
      h(
        "button",
        {type: "button", class: "btn btn--ghost", testid: "login-open", on: {click: openLogin}},
        t("login.open"),
      ),
    );
  }

  headerEl.replaceChildren(
    h(
      "div",
      {class: "header__bar"},
      h(
        "a",
        {class: "brand", href: "/", data: {nav: "armazem"}},
        h("span", {class: "brand__mark", "aria-hidden": "true"}),
        h("span", {class: "brand__name"}, siteName),
      ),
      h("div", {class: "header__tools"}, live, langButton, account),
    ),
    nav,
  );
  renderLive();
  renderAlertCount();
}

function renderLive() {
  const el = headerEl.querySelector('[data-testid="live-status"]');
  if (!el) return;
  el.dataset.state = app.live ? "open" : "closed";
  el.title = app.live ? t("live.openTitle") : t("live.closedTitle");
  setText(el.querySelector(".live__text"), app.live ? t("live.open") : t("live.closed"));
}

function renderAlertCount() {
  const el = headerEl.querySelector(".nav__count");
  if (!el) return;
  el.hidden = app.openAlerts === 0;
  setText(el, String(app.openAlerts));
  const link = el.parentElement;
  if (app.openAlerts) link.title = t("nav.alertCount", {n: app.openAlerts});
  else link.removeAttribute("title");
}

// Firing alerts are counted on every page, so a wet lot is noticed from the hullers screen too.
let alertCountBusy = false;
async function refreshAlertCount() {
  if (alertCountBusy || !app.session || needsLogin()) return;
  alertCountBusy = true;
  try {
    const list = await getJSON("/api/alerts");
    app.openAlerts = (Array.isArray(list) ? list : []).filter((a) => a.state === "firing").length;
    renderAlertCount();
  } catch {
    // shown elsewhere; the count is a convenience
  } finally {
    alertCountBusy = false;
  }
}

// ---- login -------------------------------------------------------------------------------

function loginForm({inDialog}) {
  const error = h("p", {class: "msg msg--error", testid: "login-error", role: "alert", hidden: true});
  const user = h("input", {
    id: "login-user",
    class: "input",
    testid: "login-user",
    name: "user",
    type: "text",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
  });
  const password = h("input", {
    id: "login-password",
    class: "input",
    testid: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", {type: "submit", class: "btn btn--primary", testid: "login-submit"}, t("login.submit"));
  const form = h(
    "form",
    {class: "login-form", testid: "login-form", novalidate: true},
    h("h2", {class: "login-form__title"}, t("login.title")),
    inDialog ? null : h("p", null, t("login.intro")),
    h("label", {for: "login-user"}, t("login.user")),
    user,
    h("label", {for: "login-password"}, t("login.password")),
    password,
    error,
    h(
      "div",
      {class: "login-form__actions"},
      submit,
      inDialog ? h("button", {type: "button", class: "btn", on: {click: closeLogin}}, t("login.cancel")) : null,
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    setText(submit, t("login.busy"));
    try {
      await postJSON("/api/login", {user: user.value.trim(), password: password.value});
      password.value = "";
      await fetchSession(); // the fresh CSRF token comes with the session doc
      closeLogin();
      renderAll();
    } catch (exc) {
      // 401 and 429 mean one thing each here, so staff get our own words in their
      // language rather than the agent's (English) error text.
      let text = errorText(exc);
      if (exc instanceof HttpError && exc.status === 401) text = t("login.failed");
      if (exc instanceof HttpError && exc.status === 429) text = t("login.tooMany");
      setText(error, text);
      error.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
      setText(submit, t("login.submit"));
    }
  });
  return form;
}

let dialog = null;

function openLogin() {
  closeLogin();
  dialog = h("dialog", {class: "login-dialog", "aria-labelledby": "login-title"}, loginForm({inDialog: true}));
  dialog.querySelector("h2").id = "login-title";
  dialog.addEventListener("close", () => {
    dialog?.remove();
    dialog = null;
  });
  document.body.append(dialog);
  dialog.showModal();
  dialog.querySelector('[data-testid="login-user"]').focus();
}

function closeLogin() {
  if (dialog && dialog.open) dialog.close();
  dialog?.remove();
  dialog = null;
}

async function logout() {
  try {
    await postJSON("/api/logout", {});
  } catch {
    // already logged out, or the token rotated: the session fetch below tells the truth
  }
  try {
    await fetchSession();
  } catch {
    // agent unreachable; redraw with what we know
  }
  renderAll();
}

// ---- pages ------------------------------------------------------------------------------

const pageCtx = {
  get session() {
    return app.session;
  },
  refetch: () => refetcher.request("event"),
  openLogin,
  authLost,
};

let retryTimer = 0;
let helloTimer = 0;

async function loadPage(page, reason) {
  try {
    await page.load(reason);
    if (page !== app.page) return;
    errorBox.hidden = true;
    mainEl.dataset.ready = "1";
  } catch (exc) {
    if (page !== app.page) return;
    if (exc instanceof HttpError && exc.status === 401) return; // authLost() redraws with the login form
    setText(errorBox, `${t("app.loadError")} ${errorText(exc)} ${t("app.retrying")}`);
    errorBox.hidden = false;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => refetcher.request("hello"), RETRY_MS);
  }
}

function unmountPage() {
  refetcher.cancel();
  clearTimeout(retryTimer);
  if (app.page) {
    try {
      app.page.destroy();
    } finally {
      app.page = null;
    }
  }
}

function mountPage() {
  unmountPage();
  const spec = currentPage();
  mainEl.dataset.testid = `page-${spec.id}`;
  delete mainEl.dataset.ready;
  errorBox.hidden = true;

  if (needsLogin()) {
    closeEvents();
    mainEl.replaceChildren(h("div", {class: "login-page"}, loginForm({inDialog: false})));
    mainEl.querySelector('[data-testid="login-user"]').focus();
    return;
  }
  const page = spec.create(pageCtx);
  app.page = page;
  mainEl.replaceChildren(errorBox, page.root);
  if (app.events && app.hellos > 0) {
    loadPage(page, "initial"); // the stream is up (moving between pages): nothing to wait for
    return;
  }
  // A new stream: subscribe first and load on its hello, so nothing can happen
  // between the page's snapshot and the subscription, with one fetch instead of
  // a fetch and an immediate refetch. If the hello is slow, load anyway.
  app.awaitingHello = page;
  openEvents();
  clearTimeout(helloTimer);
  helloTimer = setTimeout(() => {
    if (app.awaitingHello === page) {
      app.awaitingHello = null;
      loadPage(page, "initial");
    }
  }, HELLO_WAIT_MS);
}

function renderAll() {
  setLang(getLang()); // keeps <html lang> in step
  renderHeader();
  mountPage();
}

function navigate(path) {
  if (path === location.pathname) return;
  history.pushState(null, "", path + location.search);
  renderHeader();
  mountPage();
  mainEl.focus({preventScroll: true});
  window.scrollTo(0, 0);
}

// Internal links (nav, brand, "see alerts") carry data-nav and move client-side;
// modified clicks (new tab...) are left to the browser.
document.addEventListener("click", (e) => {
  const a = e.target instanceof Element ? e.target.closest("a[data-nav]") : null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => {
  renderHeader();
  mountPage();
});

// ---- live events ------------------------------------------------------------------------

function setLive(open) {
  if (app.live === open) return;
  app.live = open;
  renderLive();
}

function openEvents() {
  if (app.events) return;
  const es = new EventSource("/api/events");
  app.events = es;
  es.addEventListener("open", () => setLive(true));
  es.addEventListener("error", () => {
    setLive(false);
    // CONNECTING: the browser retries by itself. CLOSED: it gave up (e.g. a 401
    // after the session expired): check the session, then start over.
    if (es.readyState === EventSource.CLOSED && app.events === es) {
      app.events = null;
      setTimeout(async () => {
        await authLost();
        if (!app.events && app.session && !needsLogin()) openEvents();
      }, RETRY_MS);
    }
  });
  es.addEventListener("hello", (e) => {
    setLive(true);
    const doc = parse(e.data);
    if (doc) syncClock(doc.now_ns);
    app.hellos++;
    refreshAlertCount();
    const waiting = app.awaitingHello;
    app.awaitingHello = null;
    if (waiting && waiting === app.page) loadPage(waiting, "initial");
    else refetcher.request("hello"); // a reconnect: whatever happened meanwhile was missed
  });
  for (const type of SSE_EVENTS) {
    es.addEventListener(type, (e) => {
      const doc = parse(e.data);
      if (!doc) return;
      if (type === "alert") refreshAlertCount();
      if (app.page) app.page.onEvent(type, doc);
    });
  }
}

function closeEvents() {
  if (app.events) app.events.close();
  app.events = null;
  app.hellos = 0;
  setLive(false);
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null; // a malformed event is dropped; the next hello resynchronises
  }
}

// ---- start ---------------------------------------------------------------------------------

async function boot() {
  setLang(chooseLang(null));
  mainEl.replaceChildren(h("p", {class: "loading"}, t("app.loading")));
  setUnauthorizedHandler(() => authLost());
  for (;;) {
    try {
      await fetchSession();
      break;
    } catch (exc) {
      mainEl.replaceChildren(
        h("p", {class: "page-error", role: "alert"}, `${t("app.loadError")} ${errorText(exc)} ${t("app.retrying")}`),
      );
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
  setLang(chooseLang(app.session.lang));
  renderAll();
  setInterval(() => tickRelative(), 1000);
}

boot();
