// Alertas page: open alerts (with Acknowledge for firing ones when logged in)
// and the recent history of alert events. Every `alert` event refetches both.

import {getLang, t, tCode} from "../i18n.js";
import {apiPath, getJSON, postJSON} from "./api.js";
import {h, safeId, setText, syncKeyed} from "./dom.js";
import {time} from "./format.js";
import {badge, empty, labelCells, message, runAction, setBadge} from "./widgets.js";

/**
 * The alert's message in the page's language (the agent sends it in both), with
 * no line break between a number and its unit ("14,2 %" stays on one line).
 */
export function alertText(a) {
  const text = (a.messages && a.messages[getLang()]) ?? a.message ?? "";
  return text.replace(/(\d) (%|h\b|s\b|min\b)/g, "$1\u00a0$2");
}

const STATE_BADGE = {firing: "bad", pending: "warn", acknowledged: "info", resolved: "ok"};
const SEVERITY_BADGE = {critical: "bad", warning: "warn", info: "info"};
const STATE_ORDER = {firing: 0, pending: 1, acknowledged: 2, resolved: 3};
const SEVERITY_ORDER = {critical: 0, warning: 1, info: 2};

const OPEN_COLUMNS = [
  "alerts.severity",
  "alerts.rule",
  "alerts.subject",
  "alerts.message",
  "alerts.since",
  "alerts.state",
  "alerts.action",
];
const RECENT_COLUMNS = [
  "alerts.time",
  "alerts.rule",
  "alerts.subject",
  "alerts.state",
  "alerts.message",
  "alerts.ackedBy",
];

function head(keys) {
  return h("thead", null, h("tr", null, ...keys.map((k) => h("th", {scope: "col"}, t(k)))));
}

export function createAlertas(ctx) {
  const openBody = h("tbody");
  const openTable = h(
    "table",
    {class: "table table--alerts table--stack", testid: "alerts-open"},
    head(OPEN_COLUMNS),
    openBody,
  );
  // Without write rights the action column would stay empty: hide it.
  openTable.classList.toggle("table--readonly", !ctx.session.can_write);
  openTable.querySelector("thead th:last-child").classList.add("cell-action");
  const openEmpty = empty(t("alerts.noneOpen"), "alerts-open-empty");
  const recentBody = h("tbody");
  const recentTable = h(
    "table",
    {class: "table table--stack", testid: "alerts-recent"},
    head(RECENT_COLUMNS),
    recentBody,
  );
  const recentEmpty = empty(t("alerts.noneRecent"), "alerts-recent-empty");

  const root = h(
    "div",
    {class: "page page--alertas"},
    h("h1", {class: "sr-only"}, t("alerts.title")),
    h(
      "section",
      {class: "panel", "aria-labelledby": "open-title"},
      h("h2", {class: "panel__title", id: "open-title"}, t("alerts.open")),
      h("div", {class: "table-wrap"}, openTable),
      openEmpty,
    ),
    h(
      "section",
      {class: "panel", "aria-labelledby": "recent-title"},
      h("h2", {class: "panel__title", id: "recent-title"}, t("alerts.recent")),
      h("div", {class: "table-wrap"}, recentTable),
      recentEmpty,
    ),
  );

  function createOpenRow(a) {
    const ackButton = h(
      "button",
      {type: "button", class: "btn btn--primary", testid: "alert-ack", hidden: true},
      t("alerts.ack"),
    );
    const msg = message("alert-message");
    const tr = h(
      "tr",
      {testid: `alert-${safeId(a.rule)}-${safeId(a.subject)}`},
      h("td", null, badge("off", "", "alert-severity")),
      h("td", {testid: "alert-rule"}),
      // A lot code or subject reads as one word: never split at its hyphen.
      h("th", {scope: "row", class: "nowrap", testid: "alert-subject"}),
      h("td", {class: "cell-message", testid: "alert-text"}),
      h("td", {testid: "alert-since"}),
      h("td", null, badge("off", "", "alert-state"), h("span", {class: "cell-sub", testid: "alert-acked-by"})),
      h("td", {class: "cell-action"}, ackButton, msg),
    );
    labelCells(
      tr,
      OPEN_COLUMNS.map((k) => t(k)),
    );
    ackButton.addEventListener("click", async () => {
      const ok = await runAction({
        form: tr,
        messageEl: msg,
        action: () => postJSON(apiPath("alerts", a.rule, a.subject, "ack"), {}),
        success: t("alerts.acked"),
        onAuthLost: ctx.authLost,
      });
      if (ok) ctx.refetch();
    });
    return tr;
  }

  function updateOpenRow(tr, a) {
    const c = tr.children;
    tr.dataset.state = a.state;
    setBadge(c[0].firstChild, SEVERITY_BADGE[a.severity] || "off", tCode("alert.severity", a.severity));
    setText(c[1], tCode("alert.rule", a.rule));
    setText(c[2], a.subject);
    setText(c[3], alertText(a));
    setText(c[4], time(a.since));
    setBadge(c[5].firstChild, STATE_BADGE[a.state] || "off", tCode("alert.state", a.state));
    setText(c[5].children[1], a.acked_by ? t("armazem.wetAcked", {by: a.acked_by}) : "");
    // Acknowledge is offered only where it means something: a firing alert, and a user who may write.
    const ack = c[6].querySelector('[data-testid="alert-ack"]');
    ack.hidden = !(a.state === "firing" && ctx.session.can_write);
  }

  function renderOpen(list) {
    const sorted = list
      .slice()
      .sort(
        (x, y) =>
          (STATE_ORDER[x.state] ?? 9) - (STATE_ORDER[y.state] ?? 9) ||
          (SEVERITY_ORDER[x.severity] ?? 9) - (SEVERITY_ORDER[y.severity] ?? 9) ||
          (y.since ?? 0) - (x.since ?? 0),
      );
    openEmpty.hidden = sorted.length > 0;
    openTable.hidden = sorted.length === 0;
    syncKeyed(openBody, sorted, (a) => `${a.rule}|${a.subject}`, createOpenRow, updateOpenRow);
  }

  function renderRecent(list) {
    recentEmpty.hidden = list.length > 0;
    recentTable.hidden = list.length === 0;
    // History rows hold no state of their own (no form), so a plain rebuild is fine.
    recentBody.replaceChildren(
      ...list.map((a) =>
        labelCells(
          h(
            "tr",
            {testid: "alert-event", data: {state: a.state}},
            h("td", {class: "nowrap"}, time(a.ts)),
            h("td", null, tCode("alert.rule", a.rule)),
            h("th", {scope: "row", class: "nowrap"}, a.subject),
            h("td", null, badge(STATE_BADGE[a.state] || "off", tCode("alert.state", a.state))),
            h("td", {class: "cell-message"}, alertText(a)),
            h("td", null, a.acked_by ?? ""),
          ),
          RECENT_COLUMNS.map((k) => t(k)),
        ),
      ),
    );
  }

  async function load() {
    const [open, recent] = await Promise.all([getJSON("/api/alerts"), getJSON("/api/alerts/recent")]);
    renderOpen(Array.isArray(open) ? open : []);
    renderRecent(Array.isArray(recent) ? recent : []);
  }

  return {
    root,
    load,
    onEvent(type) {
      if (type === "alert") ctx.refetch();
    },
    destroy() {},
  };
}
