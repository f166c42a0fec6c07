// A lot's rest after the dryer, its readiness to hull, bags hulled, and its intake
// receipt: the "Secagem e beneficiamento" and "Recibo de entrada" panels of the
// Lote page, and the readiness cell of the Lotes list.
//
// Reads the record's `dried`, `readiness`, `hulled_bags` and `receipt`
// (GET /api/lots/<code>); writes through POST /api/lots/<code>/dried and
// /receipt, whose refusals (a bad stack position, markup in a field) are shown as
// the server words them. Every value goes in as text (dom.js), never as markup.
// The readiness sentence comes from the server in both languages.

import {getLang} from "../i18n.js";
import {postJSON} from "./api.js";
import {h, replace, setText} from "./dom.js";
import {dateTime, num} from "./format.js";
import {badge, message, runAction, setBadge} from "./widgets.js";

const WORDS = {
  "pt-BR": {
    hulling: "Secagem e beneficiamento",
    dried: "Saiu do secador",
    dryer: "Secador",
    patio: "Terreiro",
    mechanical: "Secador mecânico",
    at: "Quando",
    saveDried: "Registrar saída do secador",
    savedDried: "Saída do secador registrada.",
    notDried: "Saída do secador não registrada.",
    hulled: "Sacas beneficiadas",
    none: "—",
    receipt: "Recibo de entrada",
    member: "Membro (código)",
    invoice: "Nota fiscal",
    sacks: "Sacas",
    gross_kg: "Peso bruto (kg)",
    net_kg: "Peso líquido (kg)",
    stack: "Pilha",
    scale: "da balança",
    entered: "informado",
    saveReceipt: "Salvar recibo",
    savedReceipt: "Recibo salvo.",
    noReceipt: "Nenhum recibo registrado.",
    badNumber: "{field}: um número (ex.: 2450,5).",
    nothing: "Nada mudou.",
    state: {resting: "Em descanso", waiting: "Aguardando leituras", outside: "Fora da janela", ready: "Pronto para beneficiar"},
  },
  en: {
    hulling: "Drying and hulling",
    dried: "Left the dryer",
    dryer: "Dryer",
    patio: "Patio",
    mechanical: "Mechanical dryer",
    at: "When",
    saveDried: "Record leaving the dryer",
    savedDried: "Leaving the dryer recorded.",
    notDried: "Leaving the dryer not recorded.",
    hulled: "Bags hulled",
    none: "—",
    receipt: "Intake receipt",
    member: "Member (code)",
    invoice: "Invoice (nota fiscal)",
    sacks: "Sacks",
    gross_kg: "Gross weight (kg)",
    net_kg: "Net weight (kg)",
    stack: "Stack",
    scale: "from the scale",
    entered: "entered",
    saveReceipt: "Save receipt",
    savedReceipt: "Receipt saved.",
    noReceipt: "No receipt recorded.",
    badNumber: "{field}: a number (e.g. 2450.5).",
    nothing: "Nothing changed.",
    state: {resting: "Resting", waiting: "Waiting for readings", outside: "Outside the window", ready: "Ready to hull"},
  },
};
const STATE_BADGE = {resting: "off", waiting: "off", outside: "warn", ready: "ok"};
const TEXT_FIELDS = ["member", "invoice", "stack"];
const NUMBER_FIELDS = ["sacks", "gross_kg", "net_kg"];

function words() {
  return WORDS[getLang() === "en" ? "en" : "pt-BR"];
}

/** The readiness sentence in the page's language ("" when the lot never left a dryer). */
export function readinessText(readiness) {
  if (!readiness || !readiness.text) return "";
  return readiness.text[getLang() === "en" ? "en" : "pt-BR"] || "";
}

/** The Lotes list's badge: the state, its sentence as the title (null: never left a dryer). */
export function readinessCell(readiness) {
  if (!readiness) return null;
  const w = words();
  const el = badge(STATE_BADGE[readiness.state] || "off", w.state[readiness.state] || readiness.state, "lot-readiness-cell");
  el.setAttribute("title", readinessText(readiness));
  el.dataset.readiness = readiness.state;
  return el;
}

function field(id, label, input) {
  return h("div", {class: "search-form__field"}, h("label", {for: id}, label), input);
}

function dlRow(label, value, testid) {
  return [h("dt", null, label), h("dd", {testid}, value)];
}

/** A `datetime-local` value for `ns` in the browser's zone (the site's, on the box). */
function localInput(ns) {
  const d = new Date(ns / 1e6);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/**
 * The Lote page's two panels. `lotPath(...rest)` is the lot's API path; `reload()`
 * fetches the record again after a write.
 */
export function createReadinessPanels(ctx, lotPath, reload) {
  const w = words();
  // ---- drying and hulling ----
  const state = badge("off", "", "lot-readiness", "badge--big");
  const sentence = h("p", {class: "drying__main", testid: "lot-readiness-text"});
  const facts = h("dl", {class: "lot-facts", testid: "lot-hulling-view"});
  const hulling = h(
    "section",
    {class: "panel", "aria-labelledby": "lot-hulling-title", testid: "lot-hulling"},
    h("h2", {class: "panel__title", id: "lot-hulling-title"}, w.hulling),
    h("div", {class: "lot-head__title"}, state),
    sentence,
    facts,
  );
  let driedInputs = null;
  if (ctx.session.can_write) {
    driedInputs = {
      dryer: h(
        "select",
        {id: "lot-dryer", class: "input", testid: "lot-dryer-input"},
        h("option", {value: "patio"}, w.patio),
        h("option", {value: "mechanical"}, w.mechanical),
      ),
      at: h("input", {id: "lot-dried-at", class: "input", testid: "lot-dried-at-input", type: "datetime-local"}),
    };
    const msg = message("lot-dried-message");
    const form = h(
      "form",
      {class: "details-form", testid: "lot-dried-form", novalidate: true},
      h("div", {class: "search-form__fields"}, field("lot-dryer", w.dryer, driedInputs.dryer), field("lot-dried-at", w.at, driedInputs.at)),
      h("div", {class: "search-form__actions"}, h("button", {type: "submit", class: "btn btn--primary", testid: "lot-dried-save"}, w.saveDried)),
      msg,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {dryer: driedInputs.dryer.value};
      // The browser's local time with its offset: the server needs no guess of the zone.
      if (driedInputs.at.value) {
        const at = new Date(driedInputs.at.value);
        if (!Number.isNaN(at.getTime())) body.at = at.toISOString();
      }
      const ok = await runAction({
        form,
        messageEl: msg,
        action: () => postJSON(lotPath("dried"), body),
        success: w.savedDried,
        onAuthLost: ctx.authLost,
      });
      if (ok) await reload();
    });
    hulling.append(form);
  } // read-only: the Details panel's "Entre para alterar" covers the whole page

  // ---- intake receipt ----
  const receiptView = h("dl", {class: "lot-facts", testid: "lot-receipt-view"});
  const receiptSection = h(
    "section",
    {class: "panel", "aria-labelledby": "lot-receipt-title", testid: "lot-receipt"},
    h("h2", {class: "panel__title", id: "lot-receipt-title"}, w.receipt),
    receiptView,
  );
  let inputs = null;
  let current = {};
  if (ctx.session.can_write) {
    inputs = {
      member: h("input", {id: "lot-member", class: "input", testid: "lot-member-input", type: "text", maxlength: "32", autocomplete: "off"}),
      invoice: h("input", {id: "lot-invoice", class: "input", testid: "lot-invoice-input", type: "text", maxlength: "60", inputmode: "numeric", autocomplete: "off"}),
      sacks: h("input", {id: "lot-sacks", class: "input", testid: "lot-sacks-input", type: "text", inputmode: "numeric"}),
      gross_kg: h("input", {id: "lot-gross", class: "input", testid: "lot-gross-input", type: "text", inputmode: "decimal"}),
      net_kg: h("input", {id: "lot-net", class: "input", testid: "lot-net-input", type: "text", inputmode: "decimal"}),
      stack: h("input", {id: "lot-stack", class: "input", testid: "lot-stack-input", type: "text", maxlength: "40", autocomplete: "off"}),
    };
    const ids = {member: "lot-member", invoice: "lot-invoice", sacks: "lot-sacks", gross_kg: "lot-gross", net_kg: "lot-net", stack: "lot-stack"};
    const msg = message("lot-receipt-message");
    const form = h(
      "form",
      {class: "details-form", testid: "lot-receipt-form", novalidate: true},
      h("div", {class: "search-form__fields"}, ...Object.entries(inputs).map(([key, input]) => field(ids[key], w[key], input))),
      h("div", {class: "search-form__actions"}, h("button", {type: "submit", class: "btn btn--primary", testid: "lot-receipt-save"}, w.saveReceipt)),
      msg,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      msg.classList.remove("msg--ok", "msg--error");
      const change = {};
      for (const key of TEXT_FIELDS) {
        const value = inputs[key].value.trim();
        if (value !== (current[key] || "")) change[key] = value || null;
      }
      for (const key of NUMBER_FIELDS) {
        const text = inputs[key].value.trim().replace(",", ".");
        const value = text === "" ? null : Number(text);
        if (value !== null && !Number.isFinite(value)) {
          msg.classList.add("msg--error");
          setText(msg, w.badNumber.replace("{field}", w[key]));
          inputs[key].focus();
          return;
        }
        const shown = current.weight_source === "scale" && key !== "sacks" ? null : current[key];
        if (value !== (shown ?? null)) change[key] = value;
      }
      if (!Object.keys(change).length) {
        setText(msg, w.nothing);
        return;
      }
      const ok = await runAction({
        form,
        messageEl: msg,
        action: () => postJSON(lotPath("receipt"), change),
        success: w.savedReceipt,
        onAuthLost: ctx.authLost,
      });
      if (ok) await reload();
    });
    receiptSection.append(form);
  }

  function renderHulling(doc) {
    const r = doc.readiness;
    const dried = doc.dried;
    state.hidden = !r;
    if (r) {
      setBadge(state, STATE_BADGE[r.state] || "off", w.state[r.state] || r.state);
      state.dataset.readiness = r.state;
    }
    setText(sentence, r ? readinessText(r) : dried ? "" : w.notDried);
    replace(
      facts,
      ...dlRow(w.dried, dried ? `${dateTime(dried.dried_ns)} · ${w[dried.dryer] || dried.dryer} · ${dried.by}` : w.none, "lot-dried"),
      ...dlRow(w.hulled, doc.hulled_bags === null || doc.hulled_bags === undefined ? w.none : num(doc.hulled_bags, 1), "lot-hulled"),
    );
    if (driedInputs && dried && document.activeElement !== driedInputs.at) {
      driedInputs.dryer.value = dried.dryer;
      driedInputs.at.value = localInput(dried.dried_ns);
    }
  }

  function renderReceipt(receipt) {
    current = receipt || {};
    if (!receipt) {
      replace(receiptView, h("p", {class: "cell-sub lot-facts__wide", testid: "lot-receipt-empty"}, w.noReceipt));
    } else {
      const source = receipt.weight_source ? ` (${w[receipt.weight_source] || receipt.weight_source})` : "";
      const weight = (v) => (v === null || v === undefined ? w.none : `${num(v, 1)} kg${source}`);
      replace(
        receiptView,
        ...dlRow(w.member, receipt.member || w.none, "lot-receipt-member"),
        ...dlRow(w.invoice, receipt.invoice || w.none, "lot-receipt-invoice"),
        ...dlRow(w.sacks, receipt.sacks === null ? w.none : String(receipt.sacks), "lot-receipt-sacks"),
        ...dlRow(w.gross_kg, weight(receipt.gross_kg), "lot-receipt-gross"),
        ...dlRow(w.net_kg, weight(receipt.net_kg), "lot-receipt-net"),
        ...dlRow(w.stack, receipt.stack || w.none, "lot-receipt-stack"),
      );
    }
    if (inputs && !inputs.member.form.contains(document.activeElement)) {
      for (const key of TEXT_FIELDS) inputs[key].value = current[key] || "";
      for (const key of NUMBER_FIELDS) {
        const entered = !(current.weight_source === "scale" && key !== "sacks");
        const v = current[key];
        inputs[key].value = entered && v !== null && v !== undefined ? String(v) : "";
      }
    }
  }

  return {
    hulling,
    receipt: receiptSection,
    render(doc) {
      renderHulling(doc);
      renderReceipt(doc.receipt);
    },
  };
}
