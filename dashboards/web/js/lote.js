// Lote page (/lotes/<code>): one lot's whole record from GET /api/lots/<code>.
//
// Header (code, verdict, figures), details (editable with write access, through
// POST /api/lots/<code>/details), the moisture chart over the lot's life (every
// device, the wet threshold, the drying target), the drying estimate, readings,
// weighments with their total, the timeline, the printed tickets as text, and
// the PDF/CSV downloads.
//
// Live: a `reading` event tagged with this lot, or a `lots`/`alert` event, asks
// for the record again, at most once every LIVE_GAP_MS (a lot's record can be
// hundreds of kB; readings may come several a second). Refetches update the same
// nodes, so a half-typed detail is never lost.
//
// The code comes from the URL, percent-decoded; every text of the record (code,
// producer, note, tickets, who did what) goes in as text only.

import {getLang, t} from "../i18n.js";
import {HttpError, apiPath, getJSON, postJSON} from "./api.js";
import {LotChart} from "./charts.js";
import {h, replace, setText} from "./dom.js";
import {dateTime, duration, int, num, pct, time} from "./format.js";
import {empty, errorText, figure, labelCells, loginHint, message, runAction, setBadge, badge} from "./widgets.js";
import {kg, verdictBadge} from "./lotes.js";
import {createReadinessPanels} from "./lotreadiness.js";
import {createMeterPanel} from "./lotmeters.js";

const LIVE_GAP_MS = 3000;
const READINGS_SHOWN = 100;
const TICKETS_SHOWN = 20;
const PRODUCT_TYPES = ["cereja", "coco", "pergaminho", "beneficiado"];
const BAGS_MAX = 1_000_000;
const READING_COLUMNS = ["lote.time", "lote.device", "lote.station", "lote.moisture", "lote.temperature", "lote.sample"];
const WEIGHMENT_COLUMNS = ["lote.time", "lote.device", "lote.station", "lote.gross", "lote.tare", "lote.net", "lote.trigger"];

/** The lot code of the current URL (/lotes/<code>), or null when it cannot be decoded. */
export function lotFromPath(pathname = location.pathname) {
  const raw = pathname.replace(/^\/lotes\//, "").replace(/\/+$/, "");
  try {
    const code = decodeURIComponent(raw);
    return code ? code : null;
  } catch {
    return null; // a malformed %-escape
  }
}

function head(keys, numeric) {
  return h(
    "thead",
    null,
    h("tr", null, ...keys.map((k) => h("th", {scope: "col", class: numeric.includes(k) ? "num" : null}, t(k)))),
  );
}

function section(id, title, ...children) {
  return h(
    "section",
    {class: "panel", "aria-labelledby": `${id}-title`, testid: id},
    h("h2", {class: "panel__title", id: `${id}-title`}, title),
    ...children,
  );
}

function dlRow(label, value, testid) {
  return [h("dt", null, label), h("dd", {testid}, value)];
}

export function createLote(ctx) {
  const code = lotFromPath();
  const lotPath = (...rest) => apiPath("lots", code, ...rest);
  let record = null;
  let liveTimer = 0;
  let lastLoad = 0;
  let destroyed = false;
  let showAllReadings = false;
  let showAllTickets = false;

  // ---- header ----
  const title = h("h1", {class: "lot-head__code", testid: "lot-code"});
  const verdict = badge("off", "", "lot-verdict", "badge--big");
  const seen = h("p", {class: "lot-head__seen", testid: "lot-seen"});
  const figs = {
    readings: figure(t("lotes.readings"), "lot-fig-readings"),
    mean: figure(t("lotes.mean"), "lot-fig-mean"),
    max: figure(t("lotes.max"), "lot-fig-max"),
    last: figure(t("lotes.lastMoisture"), "lot-fig-last"),
    net: figure(t("lotes.net"), "lot-fig-net"),
    alerts: figure(t("lotes.alerts"), "lot-fig-alerts"),
  };
  const where = h("dl", {class: "lot-facts"});
  const pdf = h(
    "a",
    {class: "btn btn--primary", testid: "lot-pdf", download: "", href: "#"},
    t("lote.pdf"),
  );
  const csv = h("a", {class: "btn", testid: "lot-csv", download: "", href: "#"}, t("lote.csv"));
  const header = h(
    "section",
    {class: "panel lot-head", "aria-labelledby": "lot-code-title"},
    h("div", {class: "lot-head__top"}, h("div", {class: "lot-head__title", id: "lot-code-title"}, title, verdict), seen),
    h("div", {class: "figures figures--lot"}, ...Object.values(figs).map((f) => f.el)),
    where,
    h("div", {class: "lot-downloads", role: "group", "aria-label": t("lote.downloads")}, pdf, csv),
  );

  // ---- details ----
  const detailsView = h("dl", {class: "lot-facts", testid: "lot-details-view"});
  const detailsSection = section("lot-details", t("lote.details"), detailsView);
  let detailsForm = null;
  let inputs = null;
  if (ctx.session.can_write) {
    inputs = {
      producer: h("input", {id: "lot-producer", class: "input", testid: "lot-producer-input", type: "text", maxlength: "200", autocomplete: "off"}),
      bags: h("input", {id: "lot-bags", class: "input", testid: "lot-bags-input", type: "number", min: "0", max: String(BAGS_MAX), step: "1", inputmode: "numeric"}),
      product_type: h(
        "select",
        {id: "lot-type", class: "input", testid: "lot-type-input"},
        h("option", {value: ""}, t("lote.type.none")),
        ...PRODUCT_TYPES.map((p) => h("option", {value: p}, t(`lote.type.${p}`))),
      ),
      note: h("textarea", {id: "lot-note", class: "input textarea", testid: "lot-note-input", rows: "2", maxlength: "500"}),
    };
    const msg = message("lot-details-message");
    const save = h("button", {type: "submit", class: "btn btn--primary", testid: "lot-details-save"}, t("lote.save"));
    detailsForm = h(
      "form",
      {class: "details-form", testid: "lot-details-form", novalidate: true},
      h(
        "div",
        {class: "search-form__fields"},
        ...[
          ["lot-producer", "lote.producer", inputs.producer],
          ["lot-bags", "lote.bags", inputs.bags],
          ["lot-type", "lote.type", inputs.product_type],
        ].map(([id, key, input]) => h("div", {class: "search-form__field"}, h("label", {for: id}, t(key)), input)),
        h("div", {class: "search-form__field search-form__field--wide"}, h("label", {for: "lot-note"}, t("lote.note")), inputs.note),
      ),
      h("div", {class: "search-form__actions"}, save),
      msg,
    );
    detailsForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const change = changedDetails();
      msg.classList.remove("msg--ok", "msg--error");
      if (change === null) {
        msg.classList.add("msg--error");
        setText(msg, t("lote.badBags"));
        inputs.bags.focus();
        return;
      }
      if (!Object.keys(change).length) {
        setText(msg, t("lote.nothing"));
        return;
      }
      for (const el of [inputs.product_type, inputs.note]) el.disabled = true;
      const ok = await runAction({
        form: detailsForm,
        messageEl: msg,
        action: () => postJSON(lotPath("details"), change),
        success: t("lote.saved"),
        onAuthLost: ctx.authLost,
      });
      for (const el of [inputs.product_type, inputs.note]) el.disabled = false;
      if (ok) {
        formDirty = false;
        await reload();
      }
    });
    detailsForm.addEventListener("input", () => {
      formDirty = true;
    });
    detailsSection.append(detailsForm);
  } else {
    const hint = loginHint(ctx);
    if (hint) detailsSection.append(hint);
  }
  let formDirty = false;

  // ---- chart and drying ----
  const chartBox = h("div", {class: "chart", testid: "lot-chart"});
  const dryingLine = h("p", {class: "drying__main", testid: "lot-drying"});
  const dryingSub = h("p", {class: "drying__sub", testid: "lot-drying-detail"});
  const chartSection = section(
    "lot-moisture",
    t("lote.chart"),
    chartBox,
    h("div", {class: "drying", role: "group", "aria-label": t("lote.drying")}, h("h3", {class: "section-title"}, t("lote.drying")), dryingLine, dryingSub),
  );
  let chart = null;

  // ---- readings ----
  const readingsBody = h("tbody");
  const readingsTable = h(
    "table",
    {class: "table table--stack", testid: "lot-readings"},
    head(READING_COLUMNS, ["lote.moisture", "lote.temperature"]),
    readingsBody,
  );
  const readingsNote = h("p", {class: "cell-sub", testid: "lot-readings-note"});
  const readingsAll = h(
    "button",
    {type: "button", class: "btn btn--link", testid: "lot-readings-all", hidden: true, on: {click: () => { showAllReadings = true; render(); }}},
  );
  const readingsEmpty = empty(t("lote.noReadings"), "lot-readings-empty");
  const readingsSection = section("lot-readings-section", t("lote.readings"), readingsNote, h("div", {class: "table-wrap"}, readingsTable), readingsAll, readingsEmpty);

  // ---- correcting a reading's lot (POST /api/lots/<code>/move; the server keeps the original) ----
  let moveReading = null;
  if (ctx.session.can_write) {
    moveReading = h("select", {id: "lot-move-reading", class: "input", testid: "lot-move-reading"});
    const moveTo = h("input", {id: "lot-move-to", class: "input", testid: "lot-move-to", type: "text", maxlength: "32", autocomplete: "off"});
    const moveReason = h("input", {id: "lot-move-reason", class: "input", testid: "lot-move-reason", type: "text", maxlength: "300", autocomplete: "off"});
    const moveMsg = message("lot-move-message");
    const moveForm = h(
      "form",
      {class: "details-form", testid: "lot-move-form", novalidate: true},
      h("h3", {class: "section-title"}, t("lote.move")),
      h(
        "div",
        {class: "search-form__fields"},
        ...[
          ["lot-move-reading", "lote.move.reading", moveReading],
          ["lot-move-to", "lote.move.to", moveTo],
        ].map(([id, key, input]) => h("div", {class: "search-form__field"}, h("label", {for: id}, t(key)), input)),
        h("div", {class: "search-form__field search-form__field--wide"}, h("label", {for: "lot-move-reason"}, t("lote.move.reason")), moveReason),
      ),
      h("div", {class: "search-form__actions"}, h("button", {type: "submit", class: "btn", testid: "lot-move-submit"}, t("lote.move.submit"))),
      moveMsg,
    );
    moveForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const change = {reading: moveReading.value, to: moveTo.value.trim(), reason: moveReason.value.trim()};
      moveMsg.classList.remove("msg--ok", "msg--error");
      if (!change.reading || !change.to || !change.reason) {
        moveMsg.classList.add("msg--error");
        setText(moveMsg, t("lote.move.missing"));
        return;
      }
      const ok = await runAction({
        form: moveForm,
        messageEl: moveMsg,
        action: () => postJSON(lotPath("move"), change),
        success: t("lote.move.done"),
        onAuthLost: ctx.authLost,
      });
      if (ok) {
        moveTo.value = "";
        moveReason.value = "";
        await reload();
      }
    });
    readingsSection.append(moveForm);
  }

  // ---- weighments ----
  const weighBody = h("tbody");
  const weighTotal = h("td", {class: "num", testid: "lot-weighments-total"});
  const weighTable = h(
    "table",
    {class: "table table--stack", testid: "lot-weighments"},
    head(WEIGHMENT_COLUMNS, ["lote.gross", "lote.tare", "lote.net"]),
    weighBody,
    h("tfoot", null, labelCells(h("tr", {class: "table__total"}, h("th", {scope: "row", colspan: "5"}, t("lote.total")), weighTotal, h("td")), [null, t("lote.net")])),
  );
  const weighEmpty = empty(t("lote.noWeighments"), "lot-weighments-empty");
  const weighSection = section("lot-weighments-section", t("lote.weighments"), h("div", {class: "table-wrap"}, weighTable), weighEmpty);

  // ---- timeline ----
  const timeline = h("ol", {class: "timeline", testid: "lot-timeline"});
  const timelineEmpty = empty(t("lote.noEvents"), "lot-timeline-empty");
  const timelineSection = section("lot-timeline-section", t("lote.timeline"), timeline, timelineEmpty);

  // ---- tickets ----
  const ticketsList = h("div", {class: "tickets", testid: "lot-tickets"});
  const ticketsNote = h("p", {class: "cell-sub", testid: "lot-tickets-note"});
  const ticketsAll = h(
    "button",
    {type: "button", class: "btn btn--link", testid: "lot-tickets-all", hidden: true, on: {click: () => { showAllTickets = true; render(); }}},
  );
  const ticketsEmpty = empty(t("lote.noTickets"), "lot-tickets-empty");
  const ticketsSection = section("lot-tickets-section", t("lote.tickets"), ticketsNote, ticketsList, ticketsAll, ticketsEmpty);

  // ---- drying and hulling, intake receipt (lotreadiness.js) ----
  const readiness = createReadinessPanels(ctx, lotPath, () => reload());
  // ---- meters, calibrations and the oven reference (lotmeters.js) ----
  const meters = createMeterPanel(ctx, lotPath, () => reload());

  const back = h("a", {class: "back-link", href: "/lotes", data: {nav: "lotes"}, testid: "lot-back"}, `← ${t("lote.back")}`);
  const unknown = h("div", {class: "panel lot-unknown", testid: "lot-unknown", role: "alert", hidden: true});
  const body = h(
    "div",
    {class: "lot-body", hidden: true},
    header,
    h("div", {class: "row-2"}, detailsSection, timelineSection),
    h("div", {class: "row-2"}, readiness.hulling, readiness.receipt),
    chartSection,
    weighSection,
    readingsSection,
    meters.panel,
    ticketsSection,
  );
  const root = h("div", {class: "page page--lote"}, back, unknown, body);

  // ---- rendering ----

  function changedDetails() {
    const d = (record && record.details) || {};
    const out = {};
    const producer = inputs.producer.value.trim();
    if (producer !== (d.producer || "")) out.producer = producer || null;
    const bagsText = inputs.bags.value.trim();
    if (bagsText !== "" && !/^\d+$/.test(bagsText)) return null;
    const bags = bagsText === "" ? null : Number(bagsText);
    if (bags !== null && bags > BAGS_MAX) return null;
    // A number input with garbage reads as "" but reports badInput.
    if (inputs.bags.validity && inputs.bags.validity.badInput) return null;
    if (bags !== (d.bags ?? null)) out.bags = bags;
    const type = inputs.product_type.value;
    if (type !== (d.product_type || "")) out.product_type = type || null;
    const note = inputs.note.value.trim();
    if (note !== (d.note || "")) out.note = note || null;
    return out;
  }

  function fillForm(d) {
    if (!inputs || formDirty) return;
    inputs.producer.value = d.producer || "";
    inputs.bags.value = d.bags ?? "";
    inputs.product_type.value = d.product_type || "";
    inputs.note.value = d.note || "";
  }

  function renderHeader(s) {
    setText(title, s.code);
    document.title = `${t("nav.lote")} ${s.code}`;
    setBadge(verdict, ...verdictBadge(s.verdict));
    setText(seen, t("lote.seen", {first: dateTime(s.first_ns), last: dateTime(s.last_ns)}));
    setText(figs.readings.value, int(s.readings));
    setText(figs.mean.value, pct(s.mean_moisture_pct));
    setText(figs.max.value, pct(s.max_moisture_pct));
    setText(figs.last.value, pct(s.last_moisture_pct));
    setText(figs.net.value, kg(s.net_kg, s.weighments));
    setText(figs.alerts.value, int(s.open_alerts));
    figs.alerts.value.classList.toggle("is-bad", s.open_alerts > 0);
    replace(
      where,
      dlRow(t("lote.stations"), (s.stations || []).join(", ") || t("common.none"), "lot-stations"),
      dlRow(t("lote.devices"), (s.devices || []).join(", ") || t("common.none"), "lot-devices"),
      dlRow(t("lote.product"), s.product || t("common.none"), "lot-product"),
    );
    const lang = getLang();
    pdf.href = `${lotPath("report.pdf")}?lang=${encodeURIComponent(lang)}`;
    csv.href = `${lotPath("report.csv")}?lang=${encodeURIComponent(lang)}`;
  }

  function renderDetails(d) {
    const none = t("common.none");
    replace(
      detailsView,
      dlRow(t("lote.producer"), d.producer || none, "lot-producer"),
      dlRow(t("lote.bags"), d.bags == null ? none : int(d.bags), "lot-bags"),
      dlRow(t("lote.type"), d.product_type ? t(`lote.type.${d.product_type}`) : none, "lot-type"),
      dlRow(t("lote.note"), d.note || none, "lot-note"),
    );
    if (d.updated_by) {
      detailsView.append(h("p", {class: "cell-sub lot-facts__wide", testid: "lot-details-updated"}, t("lote.updated", {by: d.updated_by, time: dateTime(d.updated_ns)})));
    }
    fillForm(d);
  }

  function renderDrying(doc) {
    const dr = doc.drying;
    if (!dr) {
      setText(dryingLine, "");
      setText(dryingSub, "");
      return;
    }
    const target = pct(dr.target_pct);
    const reason = t(`drying.reason.${dr.reason}`);
    const reasonText = reason === `drying.reason.${dr.reason}` ? (dr.text && dr.text[getLang()]) || dr.reason : reason;
    dryingLine.dataset.status = dr.status;
    if (dr.status === "estimate") {
      setText(dryingLine, t("lote.drying.estimate", {target, time: duration(dr.remaining_s)}));
      setText(dryingSub, `${t("lote.drying.eta", {time: dateTime(dr.eta_ns)})} · ${reasonText}`);
    } else if (dr.status === "reached") {
      setText(dryingLine, t("lote.drying.reached", {target}));
      setText(dryingSub, "");
    } else {
      setText(dryingLine, t("lote.drying.none", {target, reason: reasonText}));
      setText(dryingSub, "");
    }
    if (dr.fit && dr.status !== "not_enough_data") {
      const extra = t("lote.drying.fit", {me: pct(dr.fit.me_pct), n: int(dr.points)});
      setText(dryingSub, dryingSub.textContent ? `${dryingSub.textContent} · ${extra}` : extra);
    }
  }

  function renderReadings(readings) {
    const latest = readings.slice().sort((a, b) => b.ts_ns - a.ts_ns);
    if (moveReading) {
      const chosen = moveReading.value;
      moveReading.replaceChildren(
        h("option", {value: ""}, "—"),
        ...latest.map((r) => h("option", {value: `${r.device}:${r.seq}`}, `${time(r.ts_ns)} · ${r.device} · ${pct(r.moisture_pct)}`)),
      );
      moveReading.value = chosen;
    }
    const shown = showAllReadings ? latest : latest.slice(0, READINGS_SHOWN);
    readingsEmpty.hidden = readings.length > 0;
    readingsTable.hidden = readings.length === 0;
    readingsAll.hidden = shown.length >= latest.length;
    setText(readingsAll, t("lote.showAll", {n: int(latest.length)}));
    setText(readingsNote, shown.length < latest.length ? t("lote.readingsShown", {n: int(shown.length), total: int(latest.length)}) : "");
    const labels = READING_COLUMNS.map((k) => t(k));
    const threshold = record.threshold_pct;
    readingsBody.replaceChildren(
      ...shown.map((r) =>
        labelCells(
          h(
            "tr",
            {class: typeof threshold === "number" && r.moisture_pct >= threshold ? "is-wet" : null, testid: "lot-reading"},
            h("td", {class: "nowrap"}, time(r.ts_ns)),
            h("td", null, r.device),
            h("td", null, r.station || ""),
            h("td", {class: "num"}, pct(r.moisture_pct)),
            h("td", {class: "num"}, typeof r.temperature_c === "number" ? `${num(r.temperature_c, 1)} °C` : t("common.none")),
            h("td", null, r.sample_id || ""),
          ),
          labels,
        ),
      ),
    );
  }

  function renderWeighments(list) {
    weighEmpty.hidden = list.length > 0;
    weighTable.hidden = list.length === 0;
    const labels = WEIGHMENT_COLUMNS.map((k) => t(k));
    let total = 0;
    weighBody.replaceChildren(
      ...list.map((w) => {
        total += Number(w.net_kg) || 0;
        return labelCells(
          h(
            "tr",
            {testid: "lot-weighment"},
            h("td", {class: "nowrap"}, time(w.ts_ns)),
            h("td", null, w.device),
            h("td", null, w.station || ""),
            h("td", {class: "num"}, `${num(w.gross_kg, 1)} kg`),
            h("td", {class: "num"}, `${num(w.tare_kg, 1)} kg`),
            h("td", {class: "num"}, `${num(w.net_kg, 1)} kg`),
            h("td", null, w.trigger || ""),
          ),
          labels,
        );
      }),
    );
    setText(weighTotal, `${num(total, 1)} kg`);
  }

  function eventTitle(e) {
    const d = e.data || {};
    switch (e.kind) {
      case "assigned":
      case "cleared":
        return t(`event.${e.kind}`, {station: d.station || t("common.none")});
      case "details": {
        // Each value is isolated (<bdi>): a right-to-left mark in a producer's name must
        // not turn the labels after it around.
        const parts = Object.entries(d).map(([k, v], i) => {
          const label = t({producer: "lote.producer", bags: "lote.bags", product_type: "lote.type", note: "lote.note"}[k] || k);
          const shown = v === "" || v === null ? t("event.cleared.value") : k === "product_type" ? t(`lote.type.${v}`) : String(v);
          return [i ? "; " : "", `${label}: `, h("bdi", null, shown)];
        });
        return [`${t("event.details")}: `, ...parts];
      }
      case "alert":
      case "ack":
      case "resolved":
      case "service":
      case "dried":
      case "ready":
      case "receipt":
        return t(`event.${e.kind}`);
      case "moved_out":
      case "moved_in":
        return t(`event.${e.kind}`, {reading: String(d.reading || ""), pct: typeof d.moisture_pct === "number" ? pct(d.moisture_pct) : "", to: String(d.to || ""), from: String(d.from || "")});
      case "blend":
        return t("event.blend", {sources: String(d.sources || "").split(",").join(", ")});
      case "blended":
        return t("event.blended", {blend: String(d.blend || "")});
      default:
        return e.kind;
    }
  }

  function eventDetail(e) {
    const d = e.data || {};
    if (e.kind === "alert" || e.kind === "ack" || e.kind === "resolved") {
      const bits = [];
      if (d.rule) bits.push(t(`alert.rule.${d.rule}`) === `alert.rule.${d.rule}` ? String(d.rule) : t(`alert.rule.${d.rule}`));
      if (typeof d.value === "number") bits.push(pct(d.value));
      if (e.kind === "alert" && d.message) bits.push(String(d.message));
      return bits.join(" · ");
    }
    if (e.kind === "service") return e.text || "";
    if (e.kind === "moved_out" || e.kind === "moved_in") return t("event.reason", {reason: String(d.reason || "")});
    if (e.kind === "blend") return e.text || "";
    return "";
  }

  function renderTimeline(events) {
    timelineEmpty.hidden = events.length > 0;
    timeline.hidden = events.length === 0;
    timeline.replaceChildren(
      ...events
        .slice()
        .reverse()
        .map((e) =>
          h(
            "li",
            {class: ["timeline__item", `timeline__item--${e.kind}`], testid: "lot-event", data: {kind: e.kind}},
            h("span", {class: "timeline__time"}, dateTime(e.ts_ns)),
            h("span", {class: "timeline__title"}, eventTitle(e)),
            h("span", {class: "cell-sub"}, eventDetail(e)),
            h("span", {class: "cell-sub"}, [e.by ? t("lote.by", {by: e.by}) : "", e.source ? t("lote.via", {source: e.source}) : ""].filter(Boolean).join(" ")),
          ),
        ),
    );
  }

  function renderTickets(readings) {
    const withAudit = readings.filter((r) => r.audit).sort((a, b) => b.ts_ns - a.ts_ns);
    const shown = showAllTickets ? withAudit : withAudit.slice(0, TICKETS_SHOWN);
    ticketsEmpty.hidden = withAudit.length > 0;
    ticketsAll.hidden = shown.length >= withAudit.length;
    setText(ticketsAll, t("lote.showAll", {n: int(withAudit.length)}));
    setText(ticketsNote, shown.length < withAudit.length ? t("lote.ticketsShown", {n: int(shown.length), total: int(withAudit.length)}) : "");
    ticketsList.replaceChildren(
      ...shown.map((r) =>
        h(
          "figure",
          {class: "ticket", testid: "lot-ticket"},
          h(
            "figcaption",
            {class: "ticket__caption"},
            h("bdi", null, t("lote.ticket", {device: r.device, time: dateTime(r.ts_ns)})),
            r.sample_id ? [" · ", h("bdi", null, t("lote.ticketSample", {sample: r.sample_id}))] : null,
          ),
          h("pre", {class: "ticket__text", tabindex: "0"}, r.audit),
        ),
      ),
    );
  }

  function render() {
    if (!record) return;
    const doc = record;
    const s = doc.summary || {};
    const readings = Array.isArray(doc.readings) ? doc.readings : [];
    renderHeader(s);
    renderDetails(doc.details || {});
    if (!chart) chart = new LotChart(chartBox);
    const dr = doc.drying;
    chart.setData(readings, {threshold: doc.threshold_pct, target: dr && dr.fit ? dr.target_pct : null});
    renderDrying(doc);
    renderReadings(readings);
    renderWeighments(Array.isArray(doc.weighments) ? doc.weighments : []);
    renderTimeline(Array.isArray(doc.events) ? doc.events : []);
    renderTickets(readings);
    readiness.render(doc);
    meters.render(doc);
  }

  function showUnknown(text, hint) {
    body.hidden = true;
    unknown.hidden = false;
    replace(unknown, h("h1", {class: "panel__title"}, text), hint ? h("p", null, hint) : null);
    document.title = text;
  }

  async function load() {
    lastLoad = Date.now();
    if (code === null) {
      showUnknown(t("lote.badCode"), t("lote.unknownHint"));
      return;
    }
    let doc;
    try {
      doc = await getJSON(lotPath());
    } catch (exc) {
      if (exc instanceof HttpError && exc.status === 404) {
        showUnknown(t("lote.unknown", {lot: code}), t("lote.unknownHint"));
        return;
      }
      if (exc instanceof HttpError && exc.status === 400) {
        showUnknown(t("lote.badCode"), errorText(exc));
        return;
      }
      throw exc;
    }
    if (destroyed) return;
    record = doc || {};
    unknown.hidden = true;
    body.hidden = false;
    render();
  }

  async function reload() {
    try {
      await load();
    } catch {
      ctx.refetch(); // the app's retry shows the error
    }
  }

  /** A change of this lot: refetch, at most once every LIVE_GAP_MS. */
  function liveRefetch() {
    if (liveTimer || destroyed) return;
    const wait = Math.max(0, lastLoad + LIVE_GAP_MS - Date.now());
    liveTimer = setTimeout(() => {
      liveTimer = 0;
      ctx.refetch();
    }, wait);
  }

  return {
    root,
    load,
    onEvent(type, data) {
      if (type === "reading") {
        if (data && data.tags && data.tags.lot === code) liveRefetch();
      } else if (type === "lots" || type === "alert") {
        liveRefetch();
      }
    },
    destroy() {
      destroyed = true;
      clearTimeout(liveTimer);
      if (chart) chart.destroy();
    },
  };
}
