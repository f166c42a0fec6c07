// Dispositivos (devices) page: serial devices' health, each sink's delivery
// backlog, each notification channel's queue and dead letters (from
// /api/health, when [notify] is configured), the local history's disk use,
// the agent itself and its clock (js/clock.js: quality, sources, setting it).
//
// Device and sink health changes come as `devices` events (at most one a
// second; a change of the sinks' table comes as one naming no device) and
// trigger a refetch. Nothing polls.

import {t, tCode} from "../i18n.js";
import {getJSON} from "./api.js";
import {h, setText, syncKeyed} from "./dom.js";
import {bytes, duration, int, num, syncClock} from "./format.js";
import {badge, empty, labelCells, relTime, setBadge, setRelTime} from "./widgets.js";
import {createClockPanel} from "./clock.js";

function table(testid, headers) {
  const body = h("tbody");
  const el = h(
    "table",
    {class: "table table--stack", testid},
    h("thead", null, h("tr", null, ...headers.map(([key, cls]) => h("th", {scope: "col", class: cls}, t(key))))),
    body,
  );
  return {el, body, labels: headers.map(([key]) => t(key))};
}

export function createDispositivos(ctx) {
  const devices = table("devices-table", [
    ["devices.device"],
    ["devices.state"],
    ["devices.lastSeen"],
    ["devices.framesOk", "num"],
    ["devices.discarded", "num"],
    ["devices.errors", "num"],
    ["devices.port"],
    ["devices.reconnects", "num col-opt"],
  ]);
  const devicesEmpty = empty(t("devices.none"));
  const sinks = table("sinks-table", [
    ["sinks.sink"],
    ["sinks.connected"],
    ["sinks.backlog", "num"],
    ["sinks.lastDelivery"],
    ["sinks.delivered", "num"],
    ["sinks.rejected", "num col-opt"],
    ["sinks.dropped", "num col-opt"],
  ]);
  const sinksEmpty = empty(t("sinks.none"));
  const channels = table("notify-table", [
    ["notify.channel"],
    ["notify.state"],
    ["notify.queued", "num"],
    ["notify.lastSent"],
    ["notify.sent", "num"],
    ["notify.dead", "num"],
    ["notify.expired", "num col-opt"],
  ]);
  const channelsPanel = h(
    "section",
    {class: "panel", "aria-labelledby": "notify-title", testid: "notify-panel", hidden: true},
    h("h2", {class: "panel__title", id: "notify-title"}, t("notify.title")),
    h("div", {class: "table-wrap"}, channels.el),
    h("p", {class: "usage__sub"}, t("notify.deadHint")),
  );
  const historyBody = h("div", {class: "usage", testid: "history"});
  const agentBody = h("div", {class: "agent-info", testid: "agent"});
  const clock = createClockPanel(ctx);

  const root = h(
    "div",
    {class: "page page--dispositivos"},
    h("h1", {class: "sr-only"}, t("devices.title")),
    h(
      "section",
      {class: "panel", "aria-labelledby": "devices-title"},
      h("h2", {class: "panel__title", id: "devices-title"}, t("devices.title")),
      h("div", {class: "table-wrap"}, devices.el),
      devicesEmpty,
    ),
    h(
      "section",
      {class: "panel", "aria-labelledby": "sinks-title"},
      h("h2", {class: "panel__title", id: "sinks-title"}, t("sinks.title")),
      h("div", {class: "table-wrap"}, sinks.el),
      sinksEmpty,
    ),
    channelsPanel,
    h(
      "div",
      {class: "row-2"},
      h(
        "section",
        {class: "panel", "aria-labelledby": "history-title"},
        h("h2", {class: "panel__title", id: "history-title"}, t("history.title")),
        historyBody,
      ),
      h(
        "section",
        {class: "panel", "aria-labelledby": "agent-title"},
        h("h2", {class: "panel__title", id: "agent-title"}, t("agent.title")),
        agentBody,
      ),
    ),
    clock.el,
  );

  function renderDevices(list) {
    devicesEmpty.hidden = list.length > 0;
    devices.el.hidden = list.length === 0;
    syncKeyed(
      devices.body,
      list,
      (d) => d.device,
      (d) =>
        labelCells(
          h(
            "tr",
            {testid: `device-${d.device}`},
            h("th", {scope: "row"}, h("span", {class: "cell-main"}), h("span", {class: "cell-sub"})),
            h("td", null, badge("off", "", "device-state")),
            h("td", null, relTime(null, "device-last-seen")),
            h("td", {class: "num", testid: "device-frames-ok"}),
            h("td", {class: "num", testid: "device-discarded"}),
            h(
              "td",
              {class: "num"},
              h("span", {class: "cell-main", testid: "device-errors"}),
              h("span", {class: "cell-sub"}),
            ),
            h("td", {testid: "device-port", class: "mono"}),
            h("td", {class: "num col-opt", testid: "device-reconnects"}),
          ),
          devices.labels,
        ),
      (tr, d) => {
        const c = tr.children;
        const online = d.state === "online";
        tr.classList.toggle("is-offline", !online);
        setText(c[0].children[0], d.device);
        setText(c[0].children[1], [d.driver, d.station].filter(Boolean).join(" · "));
        setBadge(c[1].firstChild, online ? "ok" : "bad", online ? t("common.online") : t("common.offline"));
        setRelTime(c[2].firstChild, d.last_frame_ns ?? d.last_reading_ns ?? null);
        setText(c[3], int(d.frames_ok));
        setText(c[4], int(d.frames_discarded));
        const errors = d.errors || {};
        const total = Object.values(errors).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
        setText(c[5].children[0], int(total));
        const parts = Object.entries(errors)
          .filter(([, n]) => n)
          .map(([kind, n]) => `${kind} ${int(n)}`);
        if (d.last_error) parts.push(t("devices.lastError", {error: d.last_error}));
        setText(c[5].children[1], parts.join(" · "));
        setText(c[6], d.port ?? t("common.none"));
        setText(c[7], int(d.reconnects));
      },
    );
  }

  function renderSinks(list) {
    sinksEmpty.hidden = list.length > 0;
    sinks.el.hidden = list.length === 0;
    syncKeyed(
      sinks.body,
      list,
      (s) => s.sink,
      (s) =>
        labelCells(
          h(
            "tr",
            {testid: `sink-${s.sink}`},
            h("th", {scope: "row"}, h("span", {class: "cell-main"}), h("span", {class: "cell-sub"})),
            h("td", null, badge("off", "", "sink-connected")),
            h("td", {class: "num", testid: "sink-backlog"}),
            h("td", null, relTime(null, "sink-last-delivery")),
            h("td", {class: "num", testid: "sink-delivered"}),
            h("td", {class: "num col-opt", testid: "sink-rejected"}),
            h("td", {class: "num col-opt", testid: "sink-dropped"}),
          ),
          sinks.labels,
        ),
      (tr, s) => {
        const c = tr.children;
        setText(c[0].children[0], s.sink);
        setText(c[0].children[1], s.last_error ? t("devices.lastError", {error: s.last_error}) : "");
        setBadge(c[1].firstChild, s.connected ? "ok" : "bad", s.connected ? t("sinks.yes") : t("sinks.no"));
        setText(c[2], int(s.backlog));
        c[2].classList.toggle("is-warn", s.backlog > 0);
        const last = c[3].firstChild;
        setRelTime(last, s.last_delivery_ns ?? null);
        if (typeof s.last_delivery_ns !== "number") setText(last, t("sinks.never"));
        setText(c[4], int(s.delivered));
        setText(c[5], int(s.rejected));
        setText(c[6], int(s.dropped));
      },
    );
  }

  function renderChannels(doc) {
    // counters.notify.channels of /api/health: absent when nothing is configured.
    const byName = doc?.counters?.notify?.channels;
    const list = byName && typeof byName === "object" ? Object.entries(byName).map(([name, c]) => ({...c, name})) : [];
    channelsPanel.hidden = list.length === 0;
    syncKeyed(
      channels.body,
      list,
      (c) => c.name,
      (c) =>
        labelCells(
          h(
            "tr",
            {testid: `notify-${c.name}`},
            h("th", {scope: "row"}, h("span", {class: "cell-main"}), h("span", {class: "cell-sub"})),
            h("td", null, badge("off", "", "notify-state")),
            h("td", {class: "num", testid: "notify-queued"}),
            h("td", null, relTime(null, "notify-last-sent")),
            h("td", {class: "num", testid: "notify-sent"}),
            h("td", {class: "num", testid: "notify-dead"}),
            h("td", {class: "num col-opt", testid: "notify-expired"}),
          ),
          channels.labels,
        ),
      (tr, c) => {
        const cells = tr.children;
        setText(cells[0].children[0], tCode("notify.channel", c.name));
        setText(cells[0].children[1], c.last_error ? t("devices.lastError", {error: c.last_error}) : "");
        const dead = c.dead > 0;
        const retrying = !dead && (typeof c.retry_at_ns === "number" || (c.queued > 0 && !!c.last_error));
        setBadge(
          cells[1].firstChild,
          dead ? "bad" : retrying ? "warn" : "ok",
          dead ? t("notify.stateDead") : retrying ? t("notify.stateRetrying") : t("notify.stateOk"),
        );
        setText(cells[2], int(c.queued));
        cells[2].classList.toggle("is-warn", c.queued > 0);
        const last = cells[3].firstChild;
        setRelTime(last, c.last_sent_ns ?? null);
        if (typeof c.last_sent_ns !== "number") setText(last, t("sinks.never"));
        setText(cells[4], int(c.sent));
        setText(cells[5], int(c.dead));
        cells[5].classList.toggle("is-bad", dead);
        setText(cells[6], int(c.expired));
      },
    );
  }

  function renderHistory(hist) {
    if (!hist) {
      historyBody.replaceChildren(h("p", null, t("history.off")));
      return;
    }
    const ratio = hist.max_bytes > 0 ? Math.min(1, hist.used_bytes / hist.max_bytes) : 0;
    const bar = h("div", {class: "progress__bar"});
    // CSSOM width: allowed by the CSP (only style attributes are refused).
    bar.style.width = `${(ratio * 100).toFixed(1)}%`;
    const state = ratio >= 0.95 ? "overdue" : ratio >= 0.8 ? "due" : "ok";
    historyBody.replaceChildren(
      h(
        "p",
        {class: "usage__text", testid: "history-used"},
        t("history.used", {used: bytes(hist.used_bytes), max: bytes(hist.max_bytes)}),
        ` (${num(ratio * 100, 0)} %)`,
      ),
      h(
        "div",
        {
          class: "progress",
          data: {state},
          role: "progressbar",
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": (ratio * 100).toFixed(0),
        },
        bar,
      ),
      h("p", {class: "usage__sub"}, t("history.droppedRaw", {n: int(hist.dropped_raw_total ?? 0)})),
    );
  }

  function renderAgent(agent) {
    if (!agent) {
      agentBody.replaceChildren();
      return;
    }
    agentBody.replaceChildren(
      h("p", {testid: "agent-version"}, t("agent.version", {v: agent.version ?? t("common.none")})),
      h("p", {testid: "agent-uptime"}, t("agent.uptime", {d: duration(agent.uptime_s)})),
      // The key that signs this box's lot packs; reports print the same fingerprint.
      agent.public_key
        ? h(
            "p",
            {class: "agent-key", testid: "agent-public-key"},
            t("agent.publicKey"),
            h("code", {class: "agent-key__fp", testid: "agent-key-fingerprint"}, agent.public_key.fingerprint),
            h("code", {class: "agent-key__raw", testid: "agent-key-raw"}, agent.public_key.key),
          )
        : null,
    );
  }

  async function load() {
    const [doc, health, time] = await Promise.all([
      getJSON("/api/devices"),
      getJSON("/api/health"),
      getJSON("/api/time"),
    ]);
    syncClock(doc.now_ns);
    renderDevices(doc.devices || []);
    renderSinks(doc.sinks || []);
    renderChannels(health);
    renderHistory(doc.history ?? null);
    renderAgent(doc.agent ?? null);
    clock.render(time);
  }

  return {
    root,
    load,
    onEvent(type) {
      if (type === "devices" || type === "alert") ctx.refetch();
    },
    destroy() {
      clock.destroy();
    },
  };
}
