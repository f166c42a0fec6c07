// A lot's meter evidence and its reference oven result: the "Medidores e estufa"
// panel of the Lote page.
//
// Reads the record's `meters` (GET /api/lots/<code>): each reading's calibration id
// by "<device>:<seq>", those calibrations (make, model, serial, method, certificate,
// due date), the readings taken past their due date, the oven results (the latest is
// the reference) and each meter's mean and bias against it. With write access, the
// oven result is entered through POST /api/lots/<code>/oven (the same validation as
// `coffee-telemetry lot oven` and `cmd/lotoven/<lot>`); the agent's refusal is shown
// in its words. Every value goes in as text (dom.js), never as markup.

import {getLang} from "../i18n.js";
import {postJSON} from "./api.js";
import {h, replace, setText} from "./dom.js";
import {dateTime, num, pct, time} from "./format.js";
import {empty, message, runAction} from "./widgets.js";

const SHOWN = 100;
const WORDS = {
  "pt-BR": {
    title: "Medidores e estufa",
    oven: "Estufa (referência)",
    noOven: "Nenhum resultado de estufa registrado.",
    ovenBy: "{pct} por {by} em {when}",
    bias: "Viés dos medidores",
    meter: "Medidor",
    readings: "Leituras",
    mean: "Média",
    biasCol: "Viés",
    perReading: "Cada leitura",
    time: "Hora",
    moisture: "Umidade",
    method: "Método",
    calibration: "Calibração",
    state: "Situação",
    overdue: "vencida",
    inForce: "em dia",
    uncalibrated: "sem calibração",
    noRef: "—",
    noReadings: "Nenhuma leitura de umidade.",
    shown: "As {n} mais recentes de {total}.",
    input: "Umidade de estufa (%)",
    save: "Registrar resultado de estufa",
    saved: "Resultado de estufa registrado.",
    nothing: "Informe a umidade de estufa (ex.: 11,4).",
  },
  en: {
    title: "Meters and oven",
    oven: "Oven (reference)",
    noOven: "No oven result recorded.",
    ovenBy: "{pct} by {by} at {when}",
    bias: "Meter bias",
    meter: "Meter",
    readings: "Readings",
    mean: "Mean",
    biasCol: "Bias",
    perReading: "Each reading",
    time: "Time",
    moisture: "Moisture",
    method: "Method",
    calibration: "Calibration",
    state: "State",
    overdue: "overdue",
    inForce: "in force",
    uncalibrated: "not calibrated",
    noRef: "—",
    noReadings: "No moisture readings.",
    shown: "The latest {n} of {total}.",
    input: "Oven moisture (%)",
    save: "Record oven result",
    saved: "Oven result recorded.",
    nothing: "Enter the oven moisture (e.g. 11.4).",
  },
};

function words() {
  return WORDS[getLang() === "en" ? "en" : "pt-BR"];
}

function fill(text, values) {
  return text.replace(/\{(\w+)\}/g, (_, k) => String(values[k] ?? ""));
}

function table(testid, columns, body) {
  return h(
    "div",
    {class: "table-wrap"},
    h("table", {class: "table table--stack", testid}, h("thead", null, h("tr", null, ...columns.map((c) => h("th", {scope: "col"}, c)))), body),
  );
}

function cells(row, labels) {
  Array.from(row.children).forEach((cell, i) => cell.setAttribute("data-label", labels[i]));
  return row;
}

/** "umid-1 (Gehaka G650i nº SN 0042-A)": the device and its identity, when recorded. */
export function meterName(device, cal) {
  if (!cal) return device;
  let ident = [cal.make, cal.model].filter(Boolean).join(" ");
  if (cal.serial) ident = `${ident} nº ${cal.serial}`.trim();
  return ident ? `${device} (${ident})` : device;
}

function signed(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "—";
  return `${value > 0 ? "+" : ""}${num(value, 2)} pp`;
}

/**
 * The Lote page's meter panel. `lotPath(...rest)` is the lot's API path; `reload()`
 * fetches the record again after a write.
 */
export function createMeterPanel(ctx, lotPath, reload) {
  const w = words();
  const ovenView = h("p", {class: "drying__main", testid: "lot-oven"});
  const biasBody = h("tbody");
  const readingBody = h("tbody");
  const readingNote = h("p", {class: "cell-sub", testid: "lot-meter-readings-note"});
  const noReadings = empty(w.noReadings, "lot-meter-readings-empty");
  const biasColumns = [w.meter, w.readings, w.mean, w.biasCol];
  const readingColumns = [w.time, w.meter, w.moisture, w.method, w.calibration, w.state];
  const biasTable = table("lot-meter-bias", biasColumns, biasBody);
  const readingTable = table("lot-meter-readings", readingColumns, readingBody);
  const panel = h(
    "section",
    {class: "panel", "aria-labelledby": "lot-meters-title", testid: "lot-meters"},
    h("h2", {class: "panel__title", id: "lot-meters-title"}, w.title),
    h("h3", {class: "section-title"}, w.oven),
    ovenView,
  );
  if (ctx.session.can_write) {
    const input = h("input", {id: "lot-oven-pct", class: "input", testid: "lot-oven-input", type: "text", inputmode: "decimal", maxlength: "12", autocomplete: "off"});
    const msg = message("lot-oven-message");
    const form = h(
      "form",
      {class: "details-form", testid: "lot-oven-form", novalidate: true},
      h("div", {class: "search-form__fields"}, h("div", {class: "search-form__field"}, h("label", {for: "lot-oven-pct"}, w.input), input)),
      h("div", {class: "search-form__actions"}, h("button", {type: "submit", class: "btn btn--primary", testid: "lot-oven-save"}, w.save)),
      msg,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) {
        msg.classList.remove("msg--ok");
        msg.classList.add("msg--error");
        setText(msg, w.nothing);
        input.focus();
        return;
      }
      // Sent as typed ("11,4" or "11.4"): the agent checks it as the CLI does.
      const ok = await runAction({
        form,
        messageEl: msg,
        action: () => postJSON(lotPath("oven"), {moisture_pct: value}),
        success: w.saved,
        onAuthLost: ctx.authLost,
      });
      if (ok) {
        input.value = "";
        await reload();
      }
    });
    panel.append(form);
  }
  panel.append(h("h3", {class: "section-title"}, w.bias), biasTable, h("h3", {class: "section-title"}, w.perReading), readingNote, readingTable, noReadings);

  function render(doc) {
    const m = doc.meters || {};
    const refs = m.refs || {};
    const cals = m.calibrations || {};
    const overdue = new Set(Array.isArray(m.overdue) ? m.overdue : []);
    const oven = m.oven;
    setText(ovenView, oven ? fill(w.ovenBy, {pct: `${num(oven.moisture_pct, 2)} %`, by: oven.by, when: dateTime(oven.ts_ns)}) : w.noOven);
    const bias = Array.isArray(m.bias) ? m.bias : [];
    const byDevice = {};
    for (const [key, ref] of Object.entries(refs)) byDevice[key.slice(0, key.lastIndexOf(":"))] = cals[ref];
    replace(
      biasBody,
      ...bias.map((b) =>
        cells(
          h(
            "tr",
            {testid: "lot-meter-bias-row", data: {device: b.device}},
            h("td", null, meterName(b.device, byDevice[b.device])),
            h("td", {class: "num"}, String(b.readings)),
            h("td", {class: "num"}, pct(b.mean_pct)),
            h("td", {class: "num", testid: "lot-meter-bias-value"}, signed(b.bias_pp)),
          ),
          biasColumns,
        ),
      ),
    );
    const readings = (Array.isArray(doc.readings) ? doc.readings : []).slice().sort((a, b) => b.ts_ns - a.ts_ns);
    const shown = readings.slice(0, SHOWN);
    noReadings.hidden = readings.length > 0;
    readingTable.hidden = readings.length === 0;
    setText(readingNote, shown.length < readings.length ? fill(w.shown, {n: shown.length, total: readings.length}) : "");
    replace(
      readingBody,
      ...shown.map((r) => {
        const key = `${r.device}:${r.seq}`;
        const ref = refs[key];
        const cal = ref ? cals[ref] : null;
        let state = w.noRef;
        if (ref) state = overdue.has(key) ? w.overdue : cal && !cal.date ? w.uncalibrated : w.inForce;
        const calText = !ref ? w.noRef : cal && cal.certificate ? `${ref} ${cal.certificate}${cal.due ? ` (${cal.due})` : ""}` : ref;
        return cells(
          h(
            "tr",
            {testid: "lot-meter-reading", data: {reading: key, overdue: overdue.has(key) ? "yes" : "no"}},
            h("td", {class: "nowrap"}, time(r.ts_ns)),
            h("td", null, meterName(r.device, cal)),
            h("td", {class: "num"}, pct(r.moisture_pct)),
            h("td", null, (cal && cal.method) || w.noRef),
            h("td", {testid: "lot-meter-calibration"}, calText),
            h("td", {testid: "lot-meter-state"}, state),
          ),
          readingColumns,
        );
      }),
    );
  }

  return {panel, render};
}
