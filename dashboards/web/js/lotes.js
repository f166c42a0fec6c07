// Lotes page: search the lot records (code, producer, dates, verdict) and page
// through the results; each row links to the lot's own page (js/lote.js).
//
// The search is GET /api/lots with parameters (per_page is always sent: without
// any parameter that path answers the active lot per station instead). The form
// keeps its values across visits within the tab (a module-level variable), so
// "back" from a lot returns to the same search and page. An inverted date range
// is caught here before asking; anything else the agent refuses (400) is shown
// under the form, in the agent's own words, and the last results stay.

import {t} from "../i18n.js";
import {HttpError, getJSON, query} from "./api.js";
import {h, replace, setText, syncKeyed} from "./dom.js";
import {dateTime, int, num, pct} from "./format.js";
import {badge, empty, errorText, labelCells, setBadge} from "./widgets.js";
import {readinessCell} from "./lotreadiness.js";

export const PER_PAGE = 50;
let pageSize = PER_PAGE;
const VERDICTS = ["wet", "ok", "none"];
const VERDICT_BADGE = {wet: "bad", ok: "ok", none: "off"};
const COLUMNS = [
  "lotes.lot",
  "lotes.producer",
  "lotes.first",
  "lotes.last",
  "lotes.readings",
  "lotes.mean",
  "lotes.max",
  "lotes.lastMoisture",
  "lotes.net",
  "lotes.status",
  "lotes.alertsCol",
];
const NUMERIC = new Set(["lotes.readings", "lotes.mean", "lotes.max", "lotes.lastMoisture", "lotes.net", "lotes.alertsCol"]);

// The search the tab showed last (kept while moving between pages).
let remembered = {q: "", producer: "", from: "", to: "", verdict: "", page: 1};

/** Lots per page from the next search on (the browser tests page through a few lots with 1). */
export function setPageSize(n) {
  pageSize = Math.max(1, Math.min(200, Math.floor(Number(n)) || PER_PAGE));
}

/** The path of a lot's page: the code escaped as one path segment. */
export function lotHref(code) {
  return `/lotes/${encodeURIComponent(code)}`;
}

/** A verdict badge's kind and text. */
export function verdictBadge(verdict) {
  return [VERDICT_BADGE[verdict] || "off", t(`verdict.${VERDICTS.includes(verdict) ? verdict : "none"}`)];
}

/** "1 234,5 kg"; "—" when nothing was weighed. */
export function kg(value, count) {
  return count ? `${num(value, 1)} kg` : t("common.none");
}

function field(id, label, input) {
  return h("div", {class: "search-form__field"}, h("label", {for: id}, label), input);
}

export function createLotes(ctx) {
  const state = {...remembered};
  const q = h("input", {
    id: "lots-q",
    class: "input",
    testid: "lots-q",
    type: "search",
    maxlength: "64",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: t("lotes.qPlaceholder"),
  });
  const producer = h("input", {
    id: "lots-producer",
    class: "input",
    testid: "lots-producer",
    type: "search",
    maxlength: "64",
    autocomplete: "off",
    placeholder: t("lotes.producerPlaceholder"),
  });
  const from = h("input", {id: "lots-from", class: "input", testid: "lots-from", type: "date", min: "2000-01-01", max: "2099-12-30"});
  const to = h("input", {id: "lots-to", class: "input", testid: "lots-to", type: "date", min: "2000-01-01", max: "2099-12-30"});
  const verdict = h(
    "select",
    {id: "lots-verdict", class: "input", testid: "lots-verdict"},
    h("option", {value: ""}, t("lotes.verdict.all")),
    ...VERDICTS.map((v) => h("option", {value: v}, t(`lotes.verdict.${v}`))),
  );
  q.value = state.q;
  producer.value = state.producer;
  from.value = state.from;
  to.value = state.to;
  verdict.value = state.verdict;

  const error = h("p", {class: "msg msg--error", testid: "lots-error", role: "alert", hidden: true});
  const form = h(
    "form",
    {class: "search-form", testid: "lots-search", role: "search", "aria-label": t("lotes.search"), novalidate: true},
    h(
      "div",
      {class: "search-form__fields"},
      field("lots-q", t("lotes.q"), q),
      field("lots-producer", t("lotes.producer"), producer),
      field("lots-from", t("lotes.from"), from),
      field("lots-to", t("lotes.to"), to),
      field("lots-verdict", t("lotes.verdict"), verdict),
    ),
    h(
      "div",
      {class: "search-form__actions"},
      h("button", {type: "submit", class: "btn btn--primary", testid: "lots-submit"}, t("lotes.submit")),
      h("button", {type: "button", class: "btn", testid: "lots-reset", on: {click: reset}}, t("lotes.reset")),
    ),
    error,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    search(1);
  });

  const total = h("p", {class: "results__total", testid: "lots-total", role: "status", "aria-live": "polite"});
  const body = h("tbody");
  const table = h(
    "table",
    {class: "table table--stack table--lots", testid: "lots-table"},
    h(
      "thead",
      null,
      h("tr", null, ...COLUMNS.map((k) => h("th", {scope: "col", class: NUMERIC.has(k) ? "num" : null}, t(k)))),
    ),
    body,
  );
  const none = empty(t("lotes.none"), "lots-empty");
  none.hidden = true;
  const prev = h("button", {type: "button", class: "btn", testid: "lots-prev", on: {click: () => search(state.page - 1)}}, t("lotes.prev"));
  const next = h("button", {type: "button", class: "btn", testid: "lots-next", on: {click: () => search(state.page + 1)}}, t("lotes.next"));
  const pageLabel = h("span", {class: "pager__label", testid: "lots-page"});
  const pager = h("nav", {class: "pager", "aria-label": t("lotes.pager"), hidden: true}, prev, pageLabel, next);

  const root = h(
    "div",
    {class: "page page--lotes"},
    h("h1", {class: "sr-only"}, t("lotes.title")),
    h("section", {class: "panel", "aria-labelledby": "lots-search-title"}, h("h2", {class: "panel__title", id: "lots-search-title"}, t("lotes.search")), form),
    h(
      "section",
      {class: "panel", "aria-labelledby": "lots-results-title"},
      h("h2", {class: "panel__title", id: "lots-results-title"}, t("lotes.results")),
      total,
      h("div", {class: "table-wrap"}, table),
      none,
      pager,
    ),
  );

  function readForm() {
    return {
      q: q.value.trim(),
      producer: producer.value.trim(),
      from: from.value,
      to: to.value,
      verdict: verdict.value,
    };
  }

  function showError(text) {
    setText(error, text);
    error.hidden = !text;
  }

  function reset() {
    q.value = "";
    producer.value = "";
    from.value = "";
    to.value = "";
    verdict.value = "";
    search(1);
  }

  async function search(page) {
    const values = readForm();
    if (values.from && values.to && values.from > values.to) {
      showError(t("lotes.inverted"));
      to.focus();
      return;
    }
    Object.assign(state, values, {page: Math.max(1, page)});
    try {
      await load("search");
    } catch (exc) {
      showError(errorText(exc));
    }
  }

  function createRow(lot) {
    const link = h("a", {class: "lot-link", testid: "lot-link"});
    const tr = h(
      "tr",
      {testid: "lot-row"},
      h("th", {scope: "row"}, link),
      h("td", {class: "cell-producer"}, h("span", {class: "clamp-3", testid: "lot-producer"})),
      h("td", {class: "nowrap", testid: "lot-first"}),
      h("td", {class: "nowrap", testid: "lot-last"}),
      h("td", {class: "num", testid: "lot-readings"}),
      h("td", {class: "num", testid: "lot-mean"}),
      h("td", {class: "num", testid: "lot-max"}),
      h("td", {class: "num", testid: "lot-last-moisture"}),
      h("td", {class: "num", testid: "lot-net"}),
      h("td", null, badge("off", "", "lot-verdict")),
      h("td", {class: "num", testid: "lot-alerts"}),
    );
    // Readiness to hull goes under the verdict: the table already fills a tablet's width.
    tr.children[9].append(h("div", {class: "cell-sub", testid: "lot-readiness"}));
    labelCells(
      tr,
      COLUMNS.map((k) => t(k)),
    );
    return tr;
  }

  function updateRow(tr, lot) {
    const c = tr.children;
    tr.classList.toggle("is-wet", lot.verdict === "wet");
    tr.dataset.lot = lot.code;
    const link = c[0].firstChild;
    link.href = lotHref(lot.code);
    link.dataset.nav = "lote";
    link.setAttribute("aria-label", t("lotes.open", {lot: lot.code}));
    setText(link, lot.code);
    const producer = c[1].firstChild;
    setText(producer, lot.producer || "");
    if (lot.producer) producer.title = lot.producer;
    else producer.removeAttribute("title");
    setText(c[2], dateTime(lot.first_ns));
    setText(c[3], dateTime(lot.last_ns));
    setText(c[4], int(lot.readings));
    setText(c[5], pct(lot.mean_moisture_pct));
    setText(c[6], pct(lot.max_moisture_pct));
    setText(c[7], pct(lot.last_moisture_pct));
    setText(c[8], kg(lot.net_kg, lot.weighments));
    setBadge(c[9].firstChild, ...verdictBadge(lot.verdict));
    setText(c[10], int(lot.open_alerts));
    c[10].classList.toggle("is-bad", lot.open_alerts > 0);
    replace(c[9].lastChild, readinessCell(lot.readiness));
  }

  function render(doc) {
    const lots = Array.isArray(doc.lots) ? doc.lots : [];
    const count = Number(doc.total) || 0;
    const pages = Math.max(1, Math.ceil(count / (Number(doc.per_page) || pageSize)));
    setText(total, count === 1 ? t("lotes.total1") : t("lotes.total", {n: int(count)}));
    none.hidden = lots.length > 0;
    table.hidden = lots.length === 0;
    syncKeyed(body, lots, (lot) => lot.code, createRow, updateRow);
    pager.hidden = pages <= 1;
    prev.disabled = state.page <= 1;
    next.disabled = state.page >= pages;
    setText(pageLabel, t("lotes.page", {page: int(state.page), pages: int(pages)}));
  }

  async function load() {
    const params = {per_page: pageSize, page: state.page};
    for (const key of ["q", "producer", "from", "to", "verdict"]) if (state[key]) params[key] = state[key];
    let doc;
    try {
      doc = await getJSON(`/api/lots?${query(params)}`);
    } catch (exc) {
      // A refused search (400) is the form's business: say why and keep the last results.
      if (exc instanceof HttpError && exc.status === 400) {
        showError(errorText(exc));
        return;
      }
      throw exc;
    }
    showError("");
    remembered = {...state};
    render(doc || {});
  }

  return {
    root,
    load,
    onEvent(type, data) {
      // New lots, readings and alerts change the figures; the app throttles refetches.
      if (type === "lots" || type === "alert") ctx.refetch();
      else if (type === "reading" && data && data.tags && data.tags.lot) ctx.refetch();
    },
    destroy() {},
  };
}
