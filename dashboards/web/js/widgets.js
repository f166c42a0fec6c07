// Small UI pieces shared by the pages: status badges, live "5 s ago" labels,
// figure tiles, and the submit/feedback cycle of the write forms.

import {t} from "../i18n.js";
import {HttpError, NetworkError} from "./api.js";
import {relative, time} from "./format.js";
import {h, setState, setText} from "./dom.js";

// Badge kinds map to colours in app.css; each also gets an icon from CSS
// (::before, so it is not part of the badge's text) because colour alone does not
// reach colour-blind staff: ok ✓, warn !, bad ✕, off ○, info •.
export const BADGE_KINDS = ["ok", "warn", "bad", "off", "info"];
const BADGE_CLASSES = BADGE_KINDS.map((k) => `badge--${k}`);

export function badge(kind, text, testid, extraClass) {
  const el = h("span", {class: ["badge", extraClass], testid});
  setBadge(el, kind, text);
  return el;
}

export function setBadge(el, kind, text) {
  setState(el, BADGE_CLASSES, `badge--${kind}`);
  el.dataset.state = kind;
  setText(el, text);
}

/**
 * A "há 5 s" label that keeps counting: the app calls tickRelative() every second
 * and it refreshes every such label from its data-ns. The title holds the
 * absolute time for whoever taps or hovers.
 */
export function relTime(ns, testid) {
  const el = h("span", {class: "rel", testid});
  setRelTime(el, ns);
  return el;
}

export function setRelTime(el, ns) {
  if (typeof ns === "number") {
    el.dataset.ns = String(ns);
    el.title = time(ns);
  } else {
    delete el.dataset.ns;
    el.removeAttribute("title");
  }
  setText(el, relative(ns));
}

export function tickRelative(root = document) {
  for (const el of root.querySelectorAll(".rel[data-ns]")) setText(el, relative(Number(el.dataset.ns)));
}

/** A labelled big figure: "Sacas hoje / 312". Returns {el, value} so the value can be updated. */
export function figure(label, testid, extraClass) {
  const value = h("span", {class: "figure__value", testid});
  const el = h("div", {class: ["figure", extraClass]}, h("span", {class: "figure__label"}, label), value);
  return {el, value};
}

/** The text to show for a failed write: the agent's own reason when it gave one. */
export function errorText(exc) {
  if (exc instanceof HttpError) {
    if (exc.serverError) return exc.serverError;
    if (exc.status === 401 || exc.status === 403) return t("app.sessionExpired");
    return t("app.httpError", {status: exc.status});
  }
  if (exc instanceof NetworkError) return t("app.networkError");
  return String(exc && exc.message ? exc.message : exc);
}

/**
 * Run a write: disable the form's controls, show "Enviando…", then the outcome
 * in `messageEl` (role=status, so screen readers announce it). Resolves to true
 * on success. A 401/403 also asks the app to re-check the session, since the
 * user was logged out elsewhere or the CSRF token rotated.
 */
export async function runAction({form, messageEl, action, success, onAuthLost}) {
  const controls = form ? Array.from(form.querySelectorAll("button, input")) : [];
  for (const c of controls) c.disabled = true;
  messageEl.classList.remove("msg--ok", "msg--error");
  setText(messageEl, t("common.sending"));
  try {
    await action();
    messageEl.classList.add("msg--ok");
    setText(messageEl, success);
    return true;
  } catch (exc) {
    messageEl.classList.add("msg--error");
    setText(messageEl, errorText(exc));
    if (exc instanceof HttpError && (exc.status === 401 || exc.status === 403) && onAuthLost) onAuthLost();
    return false;
  } finally {
    for (const c of controls) c.disabled = false;
  }
}

/** A role=status line under a form. */
export function message(testid) {
  return h("p", {class: "msg", testid, role: "status", "aria-live": "polite"});
}

/** The "Entre para alterar" line shown in place of a form when logging in would allow the change. */
export function loginHint(ctx) {
  if (ctx.session.can_write || !ctx.session.login_enabled) return null;
  return h(
    "p",
    {class: "login-hint"},
    h(
      "button",
      {type: "button", class: "btn btn--link", testid: "login-hint", on: {click: () => ctx.openLogin()}},
      t("hint.login"),
    ),
  );
}

/** An empty-state line ("Nenhum lote medido hoje."). */
export function empty(text, testid) {
  return h("p", {class: "empty", testid}, text);
}

/**
 * Copy each column's header onto its cells as data-label. On narrow screens
 * (a tablet in portrait) app.css stacks such table rows into cards and shows
 * the label before each value, instead of making staff scroll sideways.
 */
export function labelCells(tr, labels) {
  Array.from(tr.children).forEach((cell, i) => {
    if (labels[i]) cell.dataset.label = labels[i];
  });
  return tr;
}
