// Charts, drawn with the vendored uPlot (vendor/uplot/, loaded as a classic
// script before the app, so it is the global `uPlot`).
//
// uPlot draws on a canvas and sizes its boxes through element.style (CSSOM),
// which the CSP allows; it never writes style attributes or HTML strings.
// Charts follow their container's width (ResizeObserver) so one layout serves a
// 768 px tablet and a 1920 px TV.

import {t} from "../i18n.js";
import {dayLabel, getTimeZone, hourMinute, num, nowMs, pct, shortDate, time} from "./format.js";
import {h} from "./dom.js";

const uPlot = globalThis.uPlot;

// Okabe-Ito colours: tell apart for the common kinds of colour blindness.
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00"];
const INK = "#1d1a17";
const GRID = "#e4ded6";
const WET = "#b42318";

const RIGHT_PAD = 0.02; // of the range, past the newest point

export const RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400};

function cssPx(n) {
  return Math.round(n * uPlot.pxRatio);
}

function axisFont() {
  // Readable from a few metres: follows the page's root size (bigger on a TV).
  const root = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  return Math.round(root * 0.85);
}

function chartHeight(container) {
  const fromCss = parseFloat(getComputedStyle(container).getPropertyValue("--chart-h"));
  return Number.isFinite(fromCss) && fromCss > 0 ? fromCss : 260;
}

/** Resize `plot` to its container; via rAF so a resize never re-triggers the observer in the same frame. */
function follow(container, getPlot) {
  let frame = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      const plot = getPlot();
      const width = Math.floor(container.clientWidth);
      if (plot && width > 0 && (plot.width !== width || plot.height !== chartHeight(container))) {
        plot.setSize({width, height: chartHeight(container)});
      }
    });
  });
  observer.observe(container);
  return () => {
    cancelAnimationFrame(frame);
    observer.disconnect();
  };
}

/** X tick labels for a time axis: clock times within a day, dates beyond (in the site's zone). */
function timeAxisValues(u, splits, axisIdx, foundSpace, foundIncr) {
  const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
  return splits.map((s) => {
    const ms = s * 1000;
    if (foundIncr >= 86400) return shortDate(ms);
    const clock = hourMinute(ms);
    // Over several days, mark midnights with the date so the axis reads like a calendar.
    if (span > 86400 && clock === "00:00") return shortDate(ms);
    return clock;
  });
}

/**
 * Moisture over time for one station: one line per meter, the wet threshold(s)
 * as dashed red lines with their value written on them.
 *
 * Data arrives per device (from /api/series or live readings) and is joined into
 * uPlot's column format, since meters at one station sample at different times.
 */
export class MoistureChart {
  constructor(container, {devices, thresholds}) {
    this.container = container;
    this.devices = devices.slice();
    this.thresholds = [...new Set(thresholds)];
    this.rangeS = RANGES["24h"];
    this.series = new Map(this.devices.map((d) => [d, {t: [], v: []}]));
    this.emptyNote = h("p", {class: "chart__empty", hidden: true}, t("chart.noData"));
    this.plotBox = h("div", {class: "chart__plot"});
    container.replaceChildren(this.plotBox, this.emptyNote);
    this.plot = new uPlot(this.options(), this.joined(), this.plotBox);
    this.unfollow = follow(container, () => this.plot);
  }

  options() {
    const font = axisFont();
    return {
      width: Math.max(300, Math.floor(this.container.clientWidth) || 600),
      height: chartHeight(this.container),
      // Ticks fall on the site's hours and midnights, not the tablet's.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), getTimeZone()),
      cursor: {drag: {x: false, y: false, setScale: false}},
      legend: {show: true, live: true},
      scales: {
        x: {time: true, range: () => this.xRange()},
        y: {range: (u, min, max) => this.yRange(min, max)},
      },
      series: [
        {label: t("chart.time"), value: (u, v) => (v == null ? t("common.none") : time(v * 1e9))},
        ...this.devices.map((device, i) => ({
          label: device,
          stroke: PALETTE[i % PALETTE.length],
          width: 2.5,
          points: {size: 7},
          value: (u, v) => pct(v),
        })),
      ],
      axes: [
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          grid: {stroke: GRID, width: 1},
          ticks: {stroke: GRID},
          space: font * 5,
          values: timeAxisValues,
        },
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          labelFont: `${font}px system-ui, sans-serif`,
          label: t("chart.moisture"),
          labelSize: font + 10,
          size: font * 3.6,
          grid: {stroke: GRID, width: 1},
          ticks: {stroke: GRID},
          // Steps no finer than 0.1 %, so one-decimal labels never repeat.
          incrs: [0.1, 0.2, 0.5, 1, 2, 5, 10],
          values: (u, splits) => splits.map((v) => num(v, 1)),
        },
      ],
      hooks: {draw: [(u) => this.drawThresholds(u)]},
    };
  }

  xRange() {
    const now = nowMs() / 1000;
    let newest = now;
    for (const s of this.series.values()) if (s.t.length) newest = Math.max(newest, s.t[s.t.length - 1]);
    // A little room on the right: the newest point is drawn whole rather than cut
    // by the edge, and a reading stamped a few ms past our estimate of the agent's
    // clock (that estimate trails by a request's latency) still falls inside.
    return [now - this.rangeS, newest + this.rangeS * RIGHT_PAD];
  }

  yRange(min, max) {
    // Always keep the threshold in view: the point of the chart is "how close to wet".
    const values = [...this.thresholds];
    if (min != null && Number.isFinite(min)) values.push(min);
    if (max != null && Number.isFinite(max)) values.push(max);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return [Math.floor((lo - 0.5) * 2) / 2, Math.ceil((hi + 0.5) * 2) / 2];
  }

  drawThresholds(u) {
    const ctx = u.ctx;
    const {left, top, width, height} = u.bbox;
    const font = axisFont();
    ctx.save();
    for (const th of this.thresholds) {
      const y = Math.round(u.valToPos(th, "y", true));
      if (y < top || y > top + height) continue;
      ctx.strokeStyle = WET;
      ctx.lineWidth = cssPx(2);
      ctx.setLineDash([cssPx(10), cssPx(6)]);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      // The label sits on a white box so it stays legible over the data lines.
      const label = t("chart.threshold", {v: num(th, 1)});
      ctx.font = `bold ${cssPx(font)}px system-ui, sans-serif`;
      const w = ctx.measureText(label).width;
      const pad = cssPx(4);
      const x = left + width - w - pad * 3;
      ctx.setLineDash([]);
      ctx.fillStyle = "rgba(255,255,255,0.9)";
      ctx.fillRect(x - pad, y - cssPx(font) - pad * 2, w + pad * 2, cssPx(font) + pad * 2);
      ctx.fillStyle = WET;
      ctx.textBaseline = "bottom";
      ctx.fillText(label, x, y - pad);
    }
    ctx.restore();
  }

  joined() {
    const tables = this.devices.map((d) => {
      const s = this.series.get(d);
      return [s.t, s.v];
    });
    if (tables.every(([ts]) => ts.length === 0)) return [[], ...this.devices.map(() => [])];
    return tables.length === 1 ? tables[0] : uPlot.join(tables);
  }

  redraw() {
    const data = this.joined();
    this.emptyNote.hidden = data[0].length > 0;
    this.plot.setData(data, true);
  }

  /** Replace one device's data (an /api/series answer) and the range it covers. */
  setSeries(device, ts, vs, range) {
    if (range && RANGES[range]) this.rangeS = RANGES[range];
    if (!this.series.has(device)) return;
    const pairs = [];
    for (let i = 0; i < ts.length; i++) if (typeof vs[i] === "number") pairs.push([ts[i], vs[i]]);
    pairs.sort((a, b) => a[0] - b[0]);
    this.series.set(device, {t: pairs.map((p) => p[0]), v: pairs.map((p) => p[1])});
  }

  /** Add a live reading; points that slid out of the range are dropped so memory stays flat. */
  append(device, tsSec, value) {
    const s = this.series.get(device);
    if (!s || typeof value !== "number") return;
    const last = s.t.length ? s.t[s.t.length - 1] : -Infinity;
    if (tsSec > last) {
      s.t.push(tsSec);
      s.v.push(value);
    } else if (tsSec < last) {
      // Out of order (a resend after a reconnect): insert in place; an equal timestamp is the same reading.
      let i = s.t.length - 1;
      while (i >= 0 && s.t[i] > tsSec) i--;
      if (s.t[i] !== tsSec) {
        s.t.splice(i + 1, 0, tsSec);
        s.v.splice(i + 1, 0, value);
      }
    }
    const start = nowMs() / 1000 - this.rangeS;
    let drop = 0;
    while (drop < s.t.length && s.t[drop] < start) drop++;
    if (drop) {
      s.t.splice(0, drop);
      s.v.splice(0, drop);
    }
    this.redraw();
  }

  setThresholds(thresholds) {
    const next = [...new Set(thresholds.filter((v) => typeof v === "number"))];
    if (next.join() === this.thresholds.join()) return;
    this.thresholds = next;
    this.plot.redraw(true, true);
  }

  destroy() {
    this.unfollow();
    this.plot.destroy();
  }
}

/**
 * Running hours per day for one huller, as bars with their value written on
 * top (the number matters more than the bar from across the room).
 */
export class HoursChart {
  constructor(container) {
    this.container = container;
    this.days = [];
    this.plotBox = h("div", {class: "chart__plot"});
    container.replaceChildren(this.plotBox);
    this.plot = new uPlot(this.options(), [[], []], this.plotBox);
    this.unfollow = follow(container, () => this.plot);
  }

  options() {
    const font = axisFont();
    return {
      width: Math.max(300, Math.floor(this.container.clientWidth) || 600),
      height: chartHeight(this.container),
      cursor: {drag: {x: false, y: false, setScale: false}, points: {show: false}},
      legend: {show: false},
      scales: {
        x: {time: false, range: () => [-0.6, Math.max(this.days.length, 1) - 0.4]},
        y: {range: (u, min, max) => [0, Math.max(Math.ceil(((max ?? 0) * 1.2) / 2) * 2, 2)]},
      },
      series: [
        {},
        {
          label: t("huller.chartHours"),
          fill: "#8a5a3b",
          stroke: "#5c3a24",
          width: 1,
          paths: uPlot.paths.bars({size: [0.7, 90]}),
          points: {show: false},
        },
      ],
      axes: [
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          grid: {show: false},
          ticks: {stroke: GRID},
          // One tick per day; labels thinned when the chart is narrow.
          splits: () => this.days.map((_, i) => i),
          values: (u, splits) => {
            const every = Math.max(1, Math.ceil((splits.length * font * 3.6) / (u.bbox.width / uPlot.pxRatio)));
            return splits.map((i) => ((this.days.length - 1 - i) % every === 0 ? dayLabel(this.days[i]) : ""));
          },
        },
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          labelFont: `${font}px system-ui, sans-serif`,
          label: t("huller.chartHours"),
          labelSize: font + 10,
          size: font * 3,
          grid: {stroke: GRID, width: 1},
          ticks: {stroke: GRID},
          incrs: [1, 2, 4, 6, 12, 24, 48, 100, 200, 500], // whole hours: labels without decimals
          values: (u, splits) => splits.map((v) => num(v, 0)),
        },
      ],
      hooks: {draw: [(u) => this.drawValues(u)]},
    };
  }

  drawValues(u) {
    const ctx = u.ctx;
    const [xs, ys] = u.data;
    const font = axisFont();
    const slot = u.bbox.width / Math.max(this.days.length, 1);
    if (slot < cssPx(font * 2.2)) return; // too narrow to write on each bar
    ctx.save();
    ctx.fillStyle = INK;
    ctx.font = `bold ${cssPx(font * 0.9)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    for (let i = 0; i < xs.length; i++) {
      if (typeof ys[i] !== "number") continue;
      ctx.fillText(num(ys[i], 1), u.valToPos(xs[i], "x", true), u.valToPos(ys[i], "y", true) - cssPx(3));
    }
    ctx.restore();
  }

  /** daily_hours from /api/hullers: [{day: "2026-11-17", hours: 6.5}, ...], oldest first. */
  setDays(daily) {
    const days = (daily || []).map((d) => d.day);
    const hours = (daily || []).map((d) => (typeof d.hours === "number" ? d.hours : null));
    const same = days.join() === this.days.join() && hours.join() === (this.plot.data[1] || []).join();
    if (same) return;
    this.days = days;
    this.plot.setData([days.map((_, i) => i), hours], true);
  }

  destroy() {
    this.unfollow();
    this.plot.destroy();
  }
}

const TARGET = "#14703a";

/**
 * A lot's moisture over its whole life: one line per meter that measured it, the
 * wet threshold (dashed red) and, when a drying estimate was fitted, the target
 * moisture (dotted green). Unlike MoistureChart the x range is the lot's own span,
 * not a window ending now; `setData` replaces everything (the page refetches the
 * record), keeping the same uPlot while the devices stay the same.
 */
export class LotChart {
  constructor(container) {
    this.container = container;
    this.devices = [];
    this.threshold = null;
    this.target = null;
    this.data = [[]];
    this.emptyNote = h("p", {class: "chart__empty", hidden: true}, t("chart.noData"));
    this.plotBox = h("div", {class: "chart__plot"});
    container.replaceChildren(this.plotBox, this.emptyNote);
    this.plot = null;
    this.unfollow = follow(container, () => this.plot);
  }

  options() {
    const font = axisFont();
    return {
      width: Math.max(300, Math.floor(this.container.clientWidth) || 600),
      height: chartHeight(this.container),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), getTimeZone()),
      cursor: {drag: {x: false, y: false, setScale: false}},
      legend: {show: true, live: true},
      scales: {
        x: {time: true, range: (u, min, max) => this.xRange(min, max)},
        y: {range: (u, min, max) => this.yRange(min, max)},
      },
      series: [
        {label: t("chart.time"), value: (u, v) => (v == null ? t("common.none") : time(v * 1e9))},
        ...this.devices.map((device, i) => ({
          label: device,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true,
          points: {size: 6},
          value: (u, v) => pct(v),
        })),
      ],
      axes: [
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          grid: {stroke: GRID, width: 1},
          ticks: {stroke: GRID},
          space: font * 5,
          values: timeAxisValues,
        },
        {
          stroke: INK,
          font: `${font}px system-ui, sans-serif`,
          labelFont: `${font}px system-ui, sans-serif`,
          label: t("chart.moisture"),
          labelSize: font + 10,
          size: font * 3.6,
          grid: {stroke: GRID, width: 1},
          ticks: {stroke: GRID},
          incrs: [0.1, 0.2, 0.5, 1, 2, 5, 10],
          values: (u, splits) => splits.map((v) => num(v, 1)),
        },
      ],
      hooks: {draw: [(u) => this.drawLines(u)]},
    };
  }

  xRange(min, max) {
    if (min == null || max == null) {
      const now = nowMs() / 1000;
      return [now - 3600, now];
    }
    // A lot measured within a few minutes still gets a readable axis of ten minutes.
    const span = max - min;
    const pad = span < 600 ? (600 - span) / 2 : span * RIGHT_PAD;
    return [min - pad, max + pad];
  }

  yRange(min, max) {
    const values = [this.threshold, this.target].filter((v) => typeof v === "number");
    if (min != null && Number.isFinite(min)) values.push(min);
    if (max != null && Number.isFinite(max)) values.push(max);
    if (!values.length) return [0, 20];
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return [Math.floor((lo - 0.5) * 2) / 2, Math.ceil((hi + 0.5) * 2) / 2];
  }

  drawLines(u) {
    const lines = [];
    if (typeof this.threshold === "number") {
      lines.push({v: this.threshold, colour: WET, dash: [10, 6], label: t("chart.threshold", {v: num(this.threshold, 1)})});
    }
    if (typeof this.target === "number") {
      lines.push({v: this.target, colour: TARGET, dash: [3, 5], label: t("lote.target", {v: num(this.target, 1)})});
    }
    const ctx = u.ctx;
    const {left, top, width, height} = u.bbox;
    const font = axisFont();
    ctx.save();
    for (const line of lines) {
      const y = Math.round(u.valToPos(line.v, "y", true));
      if (y < top || y > top + height) continue;
      ctx.strokeStyle = line.colour;
      ctx.lineWidth = cssPx(2);
      ctx.setLineDash(line.dash.map(cssPx));
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      ctx.font = `bold ${cssPx(font)}px system-ui, sans-serif`;
      const w = ctx.measureText(line.label).width;
      const pad = cssPx(4);
      // The threshold's label sits on the right, the target's on the left: they may be close.
      const x = line.colour === WET ? left + width - w - pad * 3 : left + pad * 3;
      ctx.setLineDash([]);
      ctx.fillStyle = "rgba(255,255,255,0.9)";
      ctx.fillRect(x - pad, y - cssPx(font) - pad * 2, w + pad * 2, cssPx(font) + pad * 2);
      ctx.fillStyle = line.colour;
      ctx.textAlign = "left"; // uPlot leaves its last axis' alignment on the context
      ctx.textBaseline = "bottom";
      ctx.fillText(line.label, x, y - pad);
    }
    ctx.restore();
  }

  /** readings: [{ts_ns, device, moisture_pct}], any order; threshold and target in % (or null). */
  setData(readings, {threshold, target}) {
    const byDevice = new Map();
    for (const r of readings) {
      if (typeof r.moisture_pct !== "number" || typeof r.ts_ns !== "number") continue;
      if (!byDevice.has(r.device)) byDevice.set(r.device, [[], []]);
      const s = byDevice.get(r.device);
      s[0].push(r.ts_ns / 1e9);
      s[1].push(r.moisture_pct);
    }
    const devices = [...byDevice.keys()].sort();
    const tables = devices.map((d) => {
      const [ts, vs] = byDevice.get(d);
      const order = ts.map((_, i) => i).sort((a, b) => ts[a] - ts[b]);
      return [order.map((i) => ts[i]), order.map((i) => vs[i])];
    });
    let data;
    if (tables.length === 0) data = [[]];
    else if (tables.length === 1) data = tables[0];
    else data = uPlot.join(tables);
    const linesChanged = threshold !== this.threshold || target !== this.target;
    this.threshold = typeof threshold === "number" ? threshold : null;
    this.target = typeof target === "number" ? target : null;
    this.emptyNote.hidden = data[0].length > 0;
    if (!this.plot || devices.join("\n") !== this.devices.join("\n")) {
      this.devices = devices;
      if (this.plot) this.plot.destroy();
      this.plot = new uPlot(this.options(), data, this.plotBox);
      return;
    }
    this.plot.setData(data, true);
    if (linesChanged) this.plot.redraw(true, true);
  }

  destroy() {
    this.unfollow();
    if (this.plot) this.plot.destroy();
  }
}
