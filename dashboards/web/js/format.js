// Numbers, times and durations, per language and in the site's time zone.
//
// The screen may be a tablet whose clock and time zone are wrong (no internet, no
// NTP), so nothing here trusts the browser's clock or zone:
//  - times are shown in the site's zone (from /api/session), not the browser's;
//  - "5 s ago" is measured against the agent's clock: each API answer carries
//    now_ns, and we keep the offset between it and Date.now().

import {getLang, t} from "../i18n.js";

let timeZone = undefined; // undefined = the browser's zone, until the session says otherwise
let clockOffsetMs = 0;
let cache = new Map();

/** Use the site's IANA time zone; an unknown one falls back to the browser's rather than throwing later. */
export function setTimeZone(zone) {
  timeZone = undefined;
  if (zone) {
    try {
      new Intl.DateTimeFormat("en", {timeZone: zone});
      timeZone = zone;
    } catch {
      // RangeError: invalid zone name. Showing browser-local times beats showing nothing.
    }
  }
  cache = new Map();
}

export function getTimeZone() {
  return timeZone || Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** Record the agent's clock from an answer's now_ns. */
export function syncClock(nowNs) {
  if (typeof nowNs === "number" && Number.isFinite(nowNs)) clockOffsetMs = nowNs / 1e6 - Date.now();
}

/** The agent's "now" in milliseconds since the epoch. */
export function nowMs() {
  return Date.now() + clockOffsetMs;
}

/** Formatters are costly to build; keep one per (language, zone, options). */
function formatter(kind, options) {
  const key = `${kind}|${getLang()}|${JSON.stringify(options)}`;
  let f = cache.get(key);
  if (!f) {
    f =
      kind === "num"
        ? new Intl.NumberFormat(getLang(), options)
        : new Intl.DateTimeFormat(getLang(), {timeZone, ...options});
    cache.set(key, f);
  }
  return f;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** A number with exactly `digits` decimals ("11,8" in pt-BR); "—" for null. */
export function num(value, digits = 1) {
  if (!isNum(value)) return t("common.none");
  return formatter("num", {minimumFractionDigits: digits, maximumFractionDigits: digits}).format(value);
}

/** An integer count with thousands separators ("12.345" in pt-BR). */
export function int(value) {
  if (!isNum(value)) return t("common.none");
  return formatter("num", {maximumFractionDigits: 0}).format(value);
}

/**
 * A moisture percentage, "11,8 %". Written as number + space + "%" rather than
 * Intl's percent style, which would give "11,8%" in pt-BR and "11.8%" in en: one
 * shape for both languages, matching the labels on the meters themselves.
 */
export function pct(value) {
  if (!isNum(value)) return t("common.none");
  return `${num(value, 1)} %`;
}

/** Bytes as MB or GB with one decimal. */
export function bytes(value) {
  if (!isNum(value)) return t("common.none");
  if (value >= 1e9) return `${num(value / 1e9, 1)} GB`;
  if (value >= 1e6) return `${num(value / 1e6, 1)} MB`;
  return `${num(value / 1e3, 0)} kB`;
}

function dayKey(ms) {
  return formatter("date", {year: "numeric", month: "2-digit", day: "2-digit"}).format(ms);
}

/** A time of day "10:41:54"; with the date in front when it is not today (site zone). */
export function time(ns) {
  if (!isNum(ns)) return t("common.none");
  const ms = ns / 1e6;
  const clock = formatter("date", {hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"}).format(ms);
  if (dayKey(ms) === dayKey(nowMs())) return clock;
  return `${shortDate(ms)} ${clock}`;
}

/** A date and time without seconds, "17/11 10:41". */
export function dateTime(ns) {
  if (!isNum(ns)) return t("common.none");
  const ms = ns / 1e6;
  return `${shortDate(ms)} ${formatter("date", {hour: "2-digit", minute: "2-digit", hourCycle: "h23"}).format(ms)}`;
}

/** "17/11" in pt-BR, "11/17" in en. */
export function shortDate(ms) {
  return formatter("date", {day: "2-digit", month: "2-digit"}).format(ms);
}

/** A calendar day "2026-11-17" as "17/11" ("11/17" in en); a plain date, so no zone shift. */
export function dayLabel(isoDay) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(isoDay ?? ""));
  if (!m) return String(isoDay ?? "");
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 12);
  return formatter("date", {timeZone: "UTC", day: "2-digit", month: "2-digit"}).format(ms);
}

/** "10:41" for chart axes. */
export function hourMinute(ms) {
  return formatter("date", {hour: "2-digit", minute: "2-digit", hourCycle: "h23"}).format(ms);
}

/** "há 5 s" / "5 s ago", from the agent's clock. */
export function relative(ns) {
  if (!isNum(ns)) return t("common.none");
  const s = Math.round((nowMs() - ns / 1e6) / 1000);
  // A few seconds in the future is clock jitter between readings and now_ns, not news.
  if (s < -5) return t("rel.future", {n: int(-s)});
  if (s < 1) return t("rel.now");
  if (s < 60) return t("rel.s", {n: int(s)});
  if (s < 7200) return t("rel.min", {n: int(Math.floor(s / 60))});
  if (s < 172800) return t("rel.h", {n: int(Math.floor(s / 3600))});
  return t("rel.d", {n: int(Math.floor(s / 86400))});
}

/** A duration in seconds: "3 d 4 h", "2 h 5 min", "7 min". */
export function duration(seconds) {
  if (!isNum(seconds)) return t("common.none");
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return t("dur.dh", {d, h: hours});
  if (hours > 0) return t("dur.hm", {h: hours, m});
  return t("dur.m", {m});
}
