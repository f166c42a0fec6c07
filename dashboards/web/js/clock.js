// The agent's clock, on the Dispositivos page: how far its time can be trusted
// (trusted, provisional, estimated), where it comes from, each time source's state
// (GET /api/time), and, for a logged-in user while no trusted source answers,
// setting it to this device's clock after a confirm step (POST /api/time with
// Date.now() taken when "Confirmar" is pressed).
//
// A time before the agent's release date (floor_ns) is refused here already, with
// the reason, so a phone whose clock is wrong never sends it.

import {getLang, t, tCode} from "../i18n.js";
import {postJSON} from "./api.js";
import {h, setText, syncKeyed} from "./dom.js";
import {getTimeZone} from "./format.js";
import {badge, loginHint, message, runAction, setBadge} from "./widgets.js";

const QUALITY_BADGE = {trusted: "ok", provisional: "warn", estimated: "warn"};
const STATE_BADGE = {ok: "ok", standby: "info", waiting: "off", refused: "bad", unavailable: "bad"};

/** "08/12/2026 14:30:12" in the site's zone and the page's language. */
function fullTime(ms) {
  return new Intl.DateTimeFormat(getLang(), {
    timeZone: getTimeZone(),
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  }).format(ms);
}

export function createClockPanel(ctx) {
  let doc = null;
  let ticker = null;
  const quality = badge("off", "", "clock-quality");
  const source = h("p", {testid: "clock-source"});
  const now = h("p", {testid: "clock-now", class: "mono"});
  const reason = h("p", {class: "usage__sub", testid: "clock-reason"});
  const sourcesList = h("ul", {class: "clock-sources", testid: "clock-sources"});
  const refusal = h("p", {class: "usage__sub", testid: "clock-refusal"});
  const msg = message("clock-message");
  const deviceTime = h("strong", {testid: "clock-device-time", class: "mono"});
  const confirmText = h("p", {testid: "clock-confirm-text"});
  const confirmButton = h("button", {type: "button", class: "btn btn--primary", testid: "clock-confirm"}, t("clock.confirm"));
  const cancelButton = h("button", {type: "button", class: "btn", testid: "clock-cancel"}, t("clock.cancel"));
  const confirmBox = h(
    "div",
    {class: "clock-confirm", testid: "clock-confirm-box", role: "group", "aria-label": t("clock.set"), hidden: true},
    confirmText,
    h("p", null, deviceTime),
    h("div", {class: "clock-confirm__actions"}, confirmButton, cancelButton),
  );
  const setButton = h("button", {type: "button", class: "btn btn--primary", testid: "clock-set"}, t("clock.set"));
  const setArea = h("div", {class: "clock-set", testid: "clock-set-area"}, setButton, confirmBox, msg);
  const hintSlot = h("div");
  const el = h(
    "section",
    {class: "panel", "aria-labelledby": "clock-title", testid: "clock-panel", hidden: true},
    h("h2", {class: "panel__title", id: "clock-title"}, t("clock.title")),
    h("div", {class: "agent-info"}, h("p", null, quality), source, now, reason),
    h("h3", {class: "clock-sources__title"}, t("clock.sources")),
    sourcesList,
    refusal,
    setArea,
    hintSlot,
  );

  function tickDeviceTime() {
    setText(deviceTime, fullTime(Date.now()));
  }

  function closeConfirm() {
    confirmBox.hidden = true;
    setButton.hidden = false;
    if (ticker !== null) clearInterval(ticker);
    ticker = null;
  }

  setButton.addEventListener("click", () => {
    msg.classList.remove("msg--ok", "msg--error");
    setText(msg, "");
    if (doc && typeof doc.floor_ns === "number" && Date.now() * 1e6 < doc.floor_ns) {
      msg.classList.add("msg--error");
      setText(msg, t("clock.refusal.before-floor", {time: fullTime(Date.now())}));
      return;
    }
    setText(confirmText, t("clock.confirmText"));
    tickDeviceTime();
    ticker = setInterval(tickDeviceTime, 1000);
    confirmBox.hidden = false;
    setButton.hidden = true;
    confirmButton.focus();
  });
  cancelButton.addEventListener("click", closeConfirm);
  confirmButton.addEventListener("click", async () => {
    const wallMs = Date.now();
    closeConfirm();
    const ok = await runAction({
      form: setArea,
      messageEl: msg,
      action: () => postJSON("/api/time", {wall_ms: wallMs, confirmed: true}),
      success: t("clock.saved"),
      onAuthLost: ctx.authLost,
    });
    if (ok) ctx.refetch();
  });

  function reasonText(text) {
    // The agent's reasons are English; the few it gives are shown in the page's language.
    if (text === "no time source yet") return t("clock.why.noSource");
    if (text === "ntp time before the floor") return t("clock.why.ntpFloor");
    const timeout = /^no trusted time source within ([\d.]+) min$/.exec(text);
    if (timeout) return t("clock.why.timeout", {min: timeout[1]});
    return text;
  }

  function sourceName(name) {
    return tCode("clock.src", name) || name;
  }

  function render(next) {
    doc = next;
    el.hidden = !doc || doc.available === false;
    if (el.hidden) return;
    const q = doc.quality;
    setBadge(quality, QUALITY_BADGE[q] ?? "off", tCode("clock.quality", q));
    quality.dataset.quality = q;
    const [kind, who] = String(doc.source || "").split(":", 2);
    const shown = !kind ? t("clock.sourceNone") : who ? `${sourceName(kind)} (${who})` : sourceName(kind);
    setText(source, t("clock.source", {source: shown}));
    setText(now, t("clock.now", {time: fullTime(doc.now_ns / 1e6)}));
    setText(reason, doc.reason ? t("clock.reason", {reason: reasonText(doc.reason)}) : "");
    const list = Object.entries(doc.sources || {}).map(([name, s]) => ({...s, name}));
    syncKeyed(
      sourcesList,
      list,
      (s) => s.name,
      (s) =>
        h(
          "li",
          {testid: `clock-source-${s.name}`, class: "clock-sources__item"},
          h("span", {class: "cell-main"}),
          badge("off", "", "clock-source-state"),
          h("span", {class: "cell-sub"}),
        ),
      (li, s) => {
        const c = li.children;
        setText(c[0], sourceName(s.name));
        setBadge(c[1], STATE_BADGE[s.state] ?? "off", tCode("clock.state", s.state));
        c[1].dataset.sourceState = s.state;
        setText(c[2], s.detail || "");
      },
    );
    const code = doc.user_refusal_code;
    const refusedSource = code === "trusted-source" ? sourceName(String(doc.source || "").split(":")[0]) : "";
    setText(refusal, code ? t(`clock.refusal.${code}`, {source: refusedSource}) : "");
    refusal.hidden = !code;
    const canWrite = !!ctx.session.can_write;
    setArea.hidden = !!code || !canWrite;
    if (setArea.hidden) closeConfirm();
    hintSlot.replaceChildren(...(code ? [] : [loginHint(ctx)].filter(Boolean)));
  }

  return {el, render, destroy: closeConfirm};
}
