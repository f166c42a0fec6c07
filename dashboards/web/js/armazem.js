// Armazém (warehouse) page: the wet-lot alarm (js/alarm.js: banner and sound), the
// open wet-lot alerts, one panel per station (its meters' latest readings, active
// lot, moisture chart, set-lot form) and today's lots.
//
// Readings arrive over SSE several times a minute per meter. A reading updates
// its meter card and chart at once, from the event itself (staff expect the value
// on screen within 2 s of the sample), then asks for a throttled refetch of
// /api/warehouse, which brings the server's view of what the event implies
// (today's lot means, the wet verdict, new alerts). DOM nodes are kept per key
// (syncKeyed), so a refetch never wipes a half-typed lot code or a chart.

import {t} from "../i18n.js";
import {createAlarm} from "./alarm.js";
import {alertText} from "./alertas.js";
import {apiPath, getJSON, postJSON, query} from "./api.js";
import {MoistureChart, RANGES} from "./charts.js";
import {h, replace, setState, setText, syncKeyed} from "./dom.js";
import {num, pct, syncClock, time} from "./format.js";
import {badge, empty, loginHint, message, relTime, runAction, setBadge, setRelTime} from "./widgets.js";

// The chosen chart range per station survives re-renders (language switch, login).
const chosenRange = new Map();
const RANGE_KEYS = ["1h", "24h", "7d", "30d"];
const CHART_SLIDE_MS = 15000; // how often an idle chart's time window moves with the clock
const BANNER_MAX = 4; // wet-lot alerts listed in the banner
const SETTLE_RETRY_MS = 1200; // a little over the history's 1 s write interval
const SETTLE_TRIES = 4;

export function createArmazem(ctx) {
  const meters = new Map(); // device -> latest meter doc (server's, patched by live readings)
  const charts = new Map(); // station -> {chart, devices: "a,b", range, loadSeq}
  let data = null;
  const alarm = createAlarm();

  const banner = h(
    "section",
    {class: "wet-banner", testid: "wet-alerts", hidden: true, role: "alert", "aria-labelledby": "wet-title"},
    h("h2", {class: "wet-banner__title", id: "wet-title"}, t("armazem.wetTitle")),
    h("ul", {class: "wet-banner__list"}),
    h("a", {class: "wet-banner__link", href: "/alertas", data: {nav: "alertas"}}, t("armazem.seeAlerts")),
  );
  const bannerList = banner.querySelector("ul");
  const bannerLink = banner.querySelector("a");
  const stations = h("div", {class: "stations"});
  const lotsBody = h("tbody");
  const lotsEmpty = empty(t("lots.empty"), "lots-empty");
  const lotsTable = h(
    "table",
    {class: "table", testid: "lots-today"},
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ...["lots.lot", "lots.station", "lots.product", "lots.count", "lots.mean", "lots.max", "lots.status"].map(
          (k, i) => h("th", {scope: "col", class: i >= 3 && i <= 5 ? "num" : null}, t(k)),
        ),
      ),
    ),
    lotsBody,
  );
  const root = h(
    "div",
    {class: "page page--armazem"},
    h("h1", {class: "sr-only"}, t("armazem.title")),
    ...alarm.root,
    banner,
    stations,
    h(
      "section",
      {class: "panel lots", "aria-labelledby": "lots-title"},
      h("h2", {class: "panel__title", id: "lots-title"}, t("lots.title")),
      h("div", {class: "table-wrap"}, lotsTable),
      lotsEmpty,
    ),
  );

  // ---- wet-lot banner -------------------------------------------------------

  function renderBanner(alerts) {
    // Firing before acknowledged, newest first; past BANNER_MAX the rest is a
    // count and a link, so a bad day does not push the meters off the screen.
    const open = (alerts || [])
      .filter((a) => a.state !== "resolved")
      .sort(
        (x, y) => (x.state === "firing" ? 0 : 1) - (y.state === "firing" ? 0 : 1) || (y.since ?? 0) - (x.since ?? 0),
      );
    banner.hidden = open.length === 0;
    // Loud while anything is firing; once every one is acknowledged it stays, but calmer.
    banner.classList.toggle("is-calm", !open.some((a) => a.state === "firing"));
    const extra = Math.max(0, open.length - BANNER_MAX);
    setText(bannerLink, extra ? t("armazem.moreAlerts", {n: extra}) : t("armazem.seeAlerts"));
    syncKeyed(
      bannerList,
      open.slice(0, BANNER_MAX),
      (a) => `${a.rule}|${a.subject}`,
      () =>
        h(
          "li",
          {class: "wet-alert", testid: "alert-row"},
          h("span", {class: "wet-alert__lot"}),
          h("span", {class: "wet-alert__msg"}),
          h("span", {class: "wet-alert__meta"}),
        ),
      (li, a) => {
        const [lot, msg, meta] = li.children;
        li.classList.toggle("is-acked", a.state === "acknowledged");
        setText(lot, a.subject);
        setText(msg, alertText(a));
        const parts = [t("armazem.wetSince", {time: time(a.since)})];
        if (a.state === "acknowledged" && a.acked_by) parts.push(t("armazem.wetAcked", {by: a.acked_by}));
        setText(meta, parts.join(" · "));
      },
    );
  }

  // ---- stations and meters ---------------------------------------------------

  function stationList() {
    // Stations with meters first (the reason this page exists), then the rest
    // (a scale's or a huller's station still gets its set-lot form).
    const byStation = new Map();
    for (const s of data.stations || []) byStation.set(s.station, {...s, meters: []});
    for (const m of data.meters || []) {
      if (!byStation.has(m.station))
        byStation.set(m.station, {station: m.station, lot: m.active_lot ?? null, meters: []});
      byStation.get(m.station).meters.push(m);
    }
    // Meter stations in the order of the meters (the site file's order), then the others.
    const withMeters = [...new Set((data.meters || []).map((m) => m.station))].map((s) => byStation.get(s));
    return [...withMeters, ...Array.from(byStation.values()).filter((s) => !s.meters.length)];
  }

  function createStation(st) {
    const lotValue = h("strong", {class: "active-lot__value", testid: `station-lot-${st.station}`});
    const lotMeta = h("span", {class: "active-lot__meta"});
    const panel = h(
      "section",
      {class: "panel station", "aria-label": `${t("armazem.station")} ${st.station}`},
      h(
        "header",
        {class: "station__head"},
        h("h2", {class: "station__name"}, st.station),
        h(
          "p",
          {class: "active-lot"},
          h("span", {class: "active-lot__label"}, t("armazem.activeLot")),
          lotValue,
          lotMeta,
        ),
      ),
      h("div", {class: "meters"}),
      h("div", {class: "chart-slot"}),
      lotForm(st.station),
    );
    panel._lot = {value: lotValue, meta: lotMeta};
    return panel;
  }

  function updateStation(panel, st) {
    setText(panel._lot.value, st.lot ?? t("armazem.noLot"));
    panel._lot.value.classList.toggle("is-none", !st.lot);
    setText(
      panel._lot.meta,
      st.lot && st.by && st.set_at_ns ? t("armazem.lotSetBy", {by: st.by, time: time(st.set_at_ns)}) : "",
    );
    panel.classList.toggle("station--no-meters", st.meters.length === 0);
    syncKeyed(panel.querySelector(".meters"), st.meters, (m) => m.device, createMeter, updateMeter);
    syncChart(panel.querySelector(".chart-slot"), st);
  }

  function createMeter(m) {
    const el = h(
      "article",
      {class: "meter", testid: `meter-${m.device}`},
      h(
        "header",
        {class: "meter__head"},
        h("h3", {class: "meter__name"}, m.device),
        badge("off", "", "meter-online", "badge--small"),
      ),
      h(
        "div",
        {class: "meter__main"},
        h("span", {class: "meter__value", testid: "meter-moisture"}),
        badge("off", "", "meter-status", "badge--big"),
      ),
      h(
        "dl",
        {class: "meter__facts"},
        h("div", null, h("dt", null, t("meter.lot")), h("dd", {testid: "meter-lot"})),
        h("div", null, h("dt", null, t("meter.product")), h("dd", {testid: "meter-product"})),
        h(
          "div",
          null,
          h("dt", null, t("meter.time")),
          h("dd", null, h("span", {testid: "meter-time"}), " ", relTime(null, "meter-age")),
        ),
        h("div", null, h("dt", null, t("meter.temperature")), h("dd", {testid: "meter-temperature"})),
      ),
      h("p", {class: "meter__threshold", testid: "meter-threshold"}),
    );
    return el;
  }

  function updateMeter(el, m) {
    const q = (id) => el.querySelector(`[data-testid="${id}"]`);
    const hasValue = typeof m.moisture_pct === "number";
    const state = !hasValue ? "none" : m.wet ? "wet" : "ok";
    setState(el, ["is-ok", "is-wet", "is-none"], `is-${state}`);
    el.classList.toggle("is-offline", !m.online);
    setBadge(q("meter-online"), m.online ? "ok" : "off", m.online ? t("common.online") : t("common.offline"));
    setText(q("meter-moisture"), hasValue ? pct(m.moisture_pct) : t("common.none"));
    setBadge(
      q("meter-status"),
      state === "wet" ? "bad" : state === "ok" ? "ok" : "off",
      state === "wet" ? t("status.wet") : state === "ok" ? t("status.ok") : t("status.noData"),
    );
    setText(q("meter-lot"), m.lot ?? t("common.none"));
    setText(q("meter-product"), m.product ?? t("common.none"));
    setText(
      q("meter-time"),
      !m.ts_ns
        ? t("meter.noReading")
        : m.time_quality && m.time_quality !== "trusted"
          ? `${time(m.ts_ns)} (${t(`time.${m.time_quality}`)})`
          : time(m.ts_ns),
    );
    setRelTime(q("meter-age"), m.ts_ns ?? null);
    q("meter-age").hidden = !m.ts_ns;
    setText(
      q("meter-temperature"),
      typeof m.temperature_c === "number" ? `${num(m.temperature_c, 1)} °C` : t("common.none"),
    );
    setText(
      q("meter-threshold"),
      typeof m.threshold_pct === "number" ? t("meter.threshold", {v: num(m.threshold_pct, 1)}) : "",
    );
  }

  // ---- charts ------------------------------------------------------------------

  function syncChart(slot, st) {
    const devices = st.meters.map((m) => m.device);
    const thresholds = st.meters.map((m) => m.threshold_pct).filter((v) => typeof v === "number");
    const existing = charts.get(st.station);
    if (existing && existing.devices === devices.join()) {
      existing.chart.setThresholds(thresholds);
      return;
    }
    if (existing) {
      existing.chart.destroy();
      charts.delete(st.station);
    }
    slot.replaceChildren();
    if (!devices.length) return;

    const range = chosenRange.get(st.station) || "24h";
    const buttons = RANGE_KEYS.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: "btn btn--seg",
          testid: `range-${r}`,
          "aria-pressed": r === range ? "true" : "false",
          on: {click: () => setRange(st.station, r)},
        },
        t(`chart.range.${r}`),
      ),
    );
    const box = h("div", {class: "chart", testid: `chart-${st.station}`});
    const error = h("p", {class: "msg msg--error chart__error", hidden: true}, t("chart.loadError"));
    replace(slot, h("div", {class: "seg", role: "group", "aria-label": t("chart.range")}, buttons), box, error);
    const entry = {
      chart: new MoistureChart(box, {devices, thresholds}),
      devices: devices.join(),
      range,
      buttons,
      error,
      loadSeq: 0,
    };
    charts.set(st.station, entry);
    loadSeries(st.station);
  }

  function setRange(station, range) {
    const entry = charts.get(station);
    if (!entry || !RANGES[range]) return;
    chosenRange.set(station, range);
    entry.range = range;
    for (const b of entry.buttons)
      b.setAttribute("aria-pressed", b.dataset.testid === `range-${range}` ? "true" : "false");
    loadSeries(station);
  }

  async function loadSeries(station) {
    const entry = charts.get(station);
    if (!entry) return;
    const seq = ++entry.loadSeq; // a slower answer for an older range must not overwrite a newer one
    const devices = entry.devices.split(",");
    try {
      const answers = await Promise.all(
        devices.map((device) =>
          getJSON(`/api/series?${query({measurement: "moisture", device, field: "moisture_pct", range: entry.range})}`),
        ),
      );
      if (seq !== entry.loadSeq || charts.get(station) !== entry) return;
      answers.forEach((doc, i) => entry.chart.setSeries(devices[i], doc.t || [], doc.v || [], entry.range));
      entry.chart.redraw();
      entry.error.hidden = true;
    } catch {
      if (seq === entry.loadSeq) entry.error.hidden = false;
    }
  }

  // ---- set-lot form --------------------------------------------------------------

  function lotForm(station) {
    if (!ctx.session.can_write) return loginHint(ctx);
    const inputId = `lot-input-${station.replace(/[^a-zA-Z0-9_-]/g, "_")}`;
    const input = h("input", {
      id: inputId,
      class: "input",
      testid: "lot-input",
      name: "lot",
      type: "text",
      maxlength: "32",
      autocomplete: "off",
      autocapitalize: "characters",
      spellcheck: "false",
      placeholder: t("lot.placeholder"),
    });
    const msg = message("lot-message");
    const form = h(
      "form",
      {class: "lot-form", testid: `lot-form-${station}`, novalidate: true},
      h("label", {class: "lot-form__label", for: inputId}, t("lot.label")),
      h(
        "div",
        {class: "lot-form__row"},
        input,
        h("button", {type: "submit", class: "btn btn--primary", testid: "lot-set"}, t("lot.set")),
        h("button", {type: "button", class: "btn", testid: "lot-clear", on: {click: () => send(null)}}, t("lot.clear")),
      ),
      msg,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const lot = input.value.trim();
      if (!lot) {
        msg.classList.remove("msg--ok");
        msg.classList.add("msg--error");
        setText(msg, t("lot.empty"));
        input.focus();
        return;
      }
      send(lot);
    });

    async function send(lot) {
      let answer = null;
      const ok = await runAction({
        form,
        messageEl: msg,
        action: async () => {
          answer = await postJSON(apiPath("lots", station), {lot});
        },
        success: lot === null ? t("lot.cleared") : t("lot.saved", {lot}),
        onAuthLost: ctx.authLost,
      });
      if (ok) {
        if (lot !== null) input.value = "";
        // Show the new lot now; the refetch (and the `lots` event) confirm it.
        const st = (data.stations || []).find((s) => s.station === station);
        if (st) {
          st.lot = answer && "lot" in answer ? answer.lot : lot;
          st.by = ctx.session.user;
          st.set_at_ns = null;
          render();
        }
        ctx.refetch();
      }
    }
    return form;
  }

  // ---- today's lots ----------------------------------------------------------------

  function renderLots(lots) {
    lotsEmpty.hidden = lots.length > 0;
    lotsTable.hidden = lots.length === 0;
    syncKeyed(
      lotsBody,
      lots,
      (l) => `${l.station}|${l.lot}`,
      () =>
        h(
          "tr",
          {testid: "lot-row"},
          h("th", {scope: "row", testid: "lot-code"}),
          h("td", {testid: "lot-station"}),
          h("td", {testid: "lot-product"}),
          h("td", {class: "num", testid: "lot-count"}),
          h("td", {class: "num", testid: "lot-mean"}),
          h("td", {class: "num", testid: "lot-max"}),
          h("td", null, badge("off", "", "lot-badge")),
        ),
      (tr, l) => {
        const c = tr.children;
        tr.classList.toggle("is-wet", !!l.wet);
        setText(c[0], l.lot);
        setText(c[1], l.station);
        setText(c[2], l.product ?? t("common.none"));
        setText(c[3], typeof l.count === "number" ? num(l.count, 0) : t("common.none"));
        setText(c[4], pct(l.mean_pct));
        setText(c[5], pct(l.max_pct));
        setBadge(c[6].firstChild, l.wet ? "bad" : "ok", l.wet ? t("status.wet") : t("status.ok"));
      },
    );
  }

  // ---- whole page --------------------------------------------------------------------

  function render() {
    renderBanner(data.alerts);
    const list = stationList();
    if (!list.length) {
      stations.replaceChildren(empty(t("armazem.noMeters")));
    } else {
      for (const node of Array.from(stations.children)) if (node.dataset.key === undefined) node.remove();
      syncKeyed(
        stations,
        list,
        (s) => s.station,
        createStation,
        updateStation,
        (panel) => {
          const station = panel.dataset.key;
          charts.get(station)?.chart.destroy();
          charts.delete(station);
        },
      );
    }
    renderLots(data.lots_today || []);
  }

  async function load(reason) {
    const mark = alarm.mark();
    const doc = await getJSON("/api/warehouse");
    syncClock(doc.now_ns);
    data = doc;
    meters.clear();
    for (const m of data.meters || []) meters.set(m.device, m);
    render();
    alarm.setAlerts(data.alerts, mark);
    settleLots();
    // After a reconnect the charts missed whatever arrived while we were away.
    if (reason === "hello") for (const station of charts.keys()) loadSeries(station);
  }

  // Today's lots come from the agent's history, which writes its buffer once a
  // second; the refetch a reading triggers can run before that write and miss
  // it. So each lot a live reading names stays "unsettled" until a refetch shows
  // it at least as new as that reading, with a retry SETTLE_RETRY_MS later, a few
  // times at most (a lot the history never shows, e.g. history off, is dropped).
  const unsettled = new Map(); // "station|lot" -> {ts_ns, tries}
  let settleTimer = 0;

  function settleLots() {
    for (const [key, entry] of unsettled) {
      const row = (data.lots_today || []).find((l) => `${l.station}|${l.lot}` === key);
      if ((row && row.last_ns >= entry.ts_ns) || ++entry.tries > SETTLE_TRIES) unsettled.delete(key);
    }
    clearTimeout(settleTimer);
    if (unsettled.size) settleTimer = setTimeout(() => ctx.refetch(), SETTLE_RETRY_MS);
  }

  function onReading(r) {
    if (r.measurement !== "moisture" || !data) return;
    const m = meters.get(r.device);
    if (!m) {
      ctx.refetch(); // a meter we have not seen yet
      return;
    }
    const f = r.fields || {};
    const tags = r.tags || {};
    if (typeof f.moisture_pct === "number") m.moisture_pct = f.moisture_pct;
    if (typeof f.temperature_c === "number") m.temperature_c = f.temperature_c;
    m.ts_ns = r.ts_ns;
    m.time_quality = r.time_quality ?? "trusted";
    m.last_seen_ns = r.ts_ns;
    m.online = true;
    m.lot = tags.lot ?? null;
    if (m.lot) unsettled.set(`${tags.station ?? m.station}|${m.lot}`, {ts_ns: r.ts_ns, tries: 0});
    if (tags.product) {
      if (tags.product !== m.product) {
        // Another product may have another threshold; today's lots know it if any was measured.
        const known = (data.lots_today || []).find((l) => l.product === tags.product);
        if (known && typeof known.threshold_pct === "number") m.threshold_pct = known.threshold_pct;
      }
      m.product = tags.product;
    }
    // "At or above the threshold" counts as wet (README, Alerts); the refetch has the final word.
    m.wet =
      typeof m.moisture_pct === "number" && typeof m.threshold_pct === "number" && m.moisture_pct >= m.threshold_pct;
    const card = stations.querySelector(`[data-testid="meter-${CSS.escape(r.device)}"]`);
    if (card) updateMeter(card, m);
    const entry = charts.get(m.station);
    if (entry && typeof f.moisture_pct === "number") entry.chart.append(r.device, r.ts_ns / 1e9, f.moisture_pct);
    ctx.refetch();
  }

  const slide = setInterval(() => {
    for (const entry of charts.values()) entry.chart.redraw();
  }, CHART_SLIDE_MS);

  return {
    root,
    load,
    onEvent(type, payload) {
      if (type === "reading") onReading(payload);
      else if (type === "alert") {
        alarm.onAlert(payload); // the alarm starts from the event; the refetch confirms it
        ctx.refetch();
      } else if (type === "lots") ctx.refetch();
      // Scales and hullers report health every second; only the meters matter here.
      else if (type === "devices" && (payload.devices || []).some((d) => meters.has(d))) ctx.refetch();
    },
    destroy() {
      alarm.destroy();
      clearInterval(slide);
      clearTimeout(settleTimer);
      for (const entry of charts.values()) entry.chart.destroy();
      charts.clear();
    },
  };
}
