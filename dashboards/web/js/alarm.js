// The warehouse alarm: a full-width banner and a sound for a new wet-lot alert.
//
// Theory of operation
// -------------------
// An alert episode is named by rule, subject and the time it began (`since`): a
// lot that dries, clears and gets wet again is a new episode, hence a new alert.
// The alarm is on while some *firing* wet-lot episode has not been silenced.
// "Silenciar" adds every episode firing at that moment to a silenced set kept in
// localStorage (so a reload or a language switch does not ring again for them);
// the next new episode is not in the set, so it rings. Acknowledged and resolved
// episodes stop counting at once; the silenced set is trimmed to the episodes the
// agent still has open, so it never grows.
//
// Two sources say which alerts are firing. The `alert` event arrives first (the
// agent publishes it as the rule fires) and moves the alarm at once, without
// waiting for the page's refetch; /api/warehouse then gives the agent's whole
// list. A refetch that was already on its way when an event came can be older
// than that event, so events newer than the refetch's start are laid over its
// answer (`mark()` before the fetch, `setAlerts(list, mark)` after).
//
// Sound: the banner owns an <audio> element looping alarme.wav (a file shipped
// with the pages). Browsers refuse to start sound on a page nobody has touched.
// On a fresh screen the page checks whether it may, as the module loads (before
// anyone could have touched the page): a silent play(). A kiosk started with
// --autoplay-policy=no-user-gesture-required may, and is never asked; otherwise a
// bar asks once for a tap on "Ativar som" and remembers it in localStorage. A tap
// anywhere on the page counts too. Should a later visit still be refused (the
// browser's permission lasts one page load), the banner shows "Ativar som" beside
// "Silenciar", and the first tap starts the sound; until then the page does not
// try again (each refused play() would be the same answer).
//
// Background notifications: the "Ativar som" tap also asks for permission to
// notify (browsers grant it only on https or localhost); a new episode that
// fires while the tab is hidden then gets one system notification.

import {getLang, t} from "../i18n.js";
import {alertText} from "./alertas.js";
import {h, setText} from "./dom.js";
import {pct, time} from "./format.js";

export const SOUND_KEY = "coffee-telemetry.alarm.sound"; // "on": sound allowed on this screen
export const SILENCED_KEY = "coffee-telemetry.alarm.silenced"; // JSON list of episode keys
const SOUND_URL = "/static/alarme.wav";
const MAX_SILENCED = 500; // a bound on what localStorage holds, far above real use
const WET_LOT = "wet_lot";

/** The name of one alert episode. */
export function episode(a) {
  return `${a.rule}|${a.subject}|${a.since}`;
}

function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled (private mode): nothing remembered
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not fatal: the choice lasts until the page is reloaded
  }
}

// Whether this page may start sound without a tap; asked once per page load, of an
// empty element, so nothing is fetched: a refusal (NotAllowedError) comes at once,
// while an allowed play() of nothing just waits, and is called off.
const PROBE_MS = 300;
let autoplay = null;

function autoplayAllowed() {
  if (autoplay === null) {
    const probe = document.createElement("audio");
    const answer = probe.play().then(
      () => true,
      (exc) => !(exc && exc.name === "NotAllowedError"),
    );
    const waited = new Promise((resolve) => setTimeout(() => resolve(true), PROBE_MS));
    autoplay = Promise.race([answer, waited]).then((ok) => {
      probe.pause();
      return ok;
    });
  }
  return autoplay;
}

if (load(SOUND_KEY) !== "on") autoplayAllowed();

function loadSilenced() {
  try {
    const list = JSON.parse(load(SILENCED_KEY) || "[]");
    return new Set(Array.isArray(list) ? list.filter((k) => typeof k === "string") : []);
  } catch {
    return new Set();
  }
}

export function createAlarm() {
  const firing = new Map(); // episode -> alert doc (wet lots, firing)
  const fromEvents = new Map(); // episode -> {seq, doc}: events a refetch may not know yet
  let eventSeq = 0;
  let silenced = loadSilenced();
  const announced = new Set(); // episodes given a system notification
  let soundOk = load(SOUND_KEY) === "on";
  let blocked = false; // the browser refused play() and nobody has tapped since
  let destroyed = false;

  // preload "none": the file is fetched when the alarm first sounds, not on every visit.
  const audio = h("audio", {src: SOUND_URL, preload: "none", loop: true, testid: "alarm-audio"});
  const lot = h("strong", {class: "alarm__lot", testid: "alarm-lot"});
  const detail = h("p", {class: "alarm__detail", testid: "alarm-detail"});
  const enable = h(
    "button",
    {type: "button", class: "btn alarm__btn", testid: "alarm-enable-sound", hidden: true, on: {click: onEnable}},
    t("alarm.enableSound"),
  );
  const silence = h(
    "button",
    {
      type: "button",
      class: "btn alarm__btn alarm__btn--silence",
      testid: "alarm-silence",
      title: t("alarm.silenceTitle"),
      on: {click: onSilence},
    },
    t("alarm.silence"),
  );
  const banner = h(
    "section",
    {
      class: "alarm",
      testid: "wet-alarm",
      role: "alert",
      hidden: true,
      "aria-labelledby": "alarm-title",
      data: {sound: "off"}, // "playing", "off" or "blocked" (the browser refused)
    },
    h(
      "div",
      {class: "alarm__text"},
      h("h2", {class: "alarm__title", id: "alarm-title"}, t("alarm.title"), " ", lot),
      detail,
    ),
    h("div", {class: "alarm__actions"}, enable, silence),
    audio,
  );
  const prompt = h(
    "aside",
    {class: "sound-prompt", testid: "alarm-sound-prompt", hidden: true},
    h("p", {class: "sound-prompt__text"}, t("alarm.prompt")),
    h(
      "button",
      {type: "button", class: "btn btn--primary", testid: "alarm-sound-ok", on: {click: onEnable}},
      t("alarm.enableSound"),
    ),
  );

  // Any tap or key on the page lets the browser play: take it when we were refused
  // (but a tap on "Silenciar" must not start the sound it is about to stop). On
  // "click", not "pointerdown": hiding the bar moves the page up, and a press that
  // moved the page would end its click on whatever came under the finger.
  const onGesture = (e) => {
    if (!blocked && soundOk) return;
    allowSound({start: !(e.target instanceof Node && silence.contains(e.target))});
  };
  document.addEventListener("click", onGesture, true);
  document.addEventListener("keydown", onGesture, true);

  audio.addEventListener("playing", () => {
    banner.dataset.sound = "playing";
  });
  audio.addEventListener("pause", () => {
    banner.dataset.sound = blocked ? "blocked" : "off";
  });

  if (!soundOk) {
    autoplayAllowed().then((ok) => {
      if (destroyed || soundOk) return;
      if (ok) allowSound();
      else prompt.hidden = false;
    });
  }

  // ---- sound --------------------------------------------------------------------

  function allowSound({start = true} = {}) {
    soundOk = true;
    blocked = false;
    store(SOUND_KEY, "on");
    prompt.hidden = true;
    enable.hidden = true;
    if (start) sync();
  }

  function onEnable() {
    allowSound();
    askToNotify();
  }

  function askToNotify() {
    if (!window.isSecureContext || typeof Notification === "undefined") return;
    if (Notification.permission !== "default") return;
    Notification.requestPermission().catch(() => {});
  }

  function ringing() {
    for (const key of firing.keys()) if (!silenced.has(key)) return true;
    return false;
  }

  /** Start or stop the sound to match the alarm (the one place that does either). */
  function sync() {
    if (destroyed) return;
    if (ringing()) {
      if (!audio.paused || blocked) return;
      audio.play().then(
        () => {
          enable.hidden = true;
        },
        (exc) => {
          if (exc && exc.name === "AbortError") return; // paused again before it started
          blocked = true;
          enable.hidden = false;
          banner.dataset.sound = "blocked";
        },
      );
    } else if (!audio.paused) {
      audio.pause();
      audio.currentTime = 0;
    }
  }

  // ---- banner ---------------------------------------------------------------------

  function render() {
    const open = [...firing.entries()].filter(([key]) => !silenced.has(key)).map(([, a]) => a);
    banner.hidden = open.length === 0;
    if (open.length) {
      open.sort((x, y) => (y.since ?? 0) - (x.since ?? 0));
      const newest = open[0];
      setText(lot, newest.subject);
      banner.dataset.episode = episode(newest);
      // Short: the open-alerts list right under it has the whole message.
      const d = newest.data || {};
      const parts = [];
      if (d.station) parts.push(`${t("armazem.station")} ${d.station}`);
      if (typeof d.last_pct === "number" && typeof d.threshold_pct === "number")
        parts.push(t("alarm.reading", {value: pct(d.last_pct), limit: pct(d.threshold_pct)}));
      parts.push(t("armazem.wetSince", {time: time(newest.since)}));
      if (open.length > 1) parts.push(t("alarm.more", {n: open.length - 1}));
      setText(detail, parts.join(" · "));
    } else {
      delete banner.dataset.episode;
    }
    enable.hidden = !blocked;
    sync();
    notify(open);
  }

  function onSilence() {
    for (const key of firing.keys()) silenced.add(key);
    saveSilenced();
    render();
  }

  function saveSilenced() {
    store(SILENCED_KEY, JSON.stringify([...silenced].slice(-MAX_SILENCED)));
  }

  function notify(open) {
    if (typeof Notification === "undefined" || Notification.permission !== "granted") {
      for (const a of open) announced.add(episode(a)); // nothing to show later for these
      return;
    }
    for (const a of open) {
      const key = episode(a);
      if (announced.has(key)) continue;
      announced.add(key);
      if (document.visibilityState !== "hidden") continue; // the banner says it
      try {
        const n = new Notification(t("alarm.notifyTitle", {lot: a.subject}), {
          body: alertText(a),
          tag: key,
          lang: getLang(),
          requireInteraction: true,
        });
        n.addEventListener("click", () => {
          window.focus();
          n.close();
        });
      } catch {
        // some browsers allow notifications only from a service worker; the banner and sound remain
      }
    }
  }

  // ---- alerts in --------------------------------------------------------------------

  function apply(doc) {
    if (!doc || doc.rule !== WET_LOT) return false;
    const key = episode(doc);
    if (doc.state === "firing") firing.set(key, doc);
    else firing.delete(key);
    return true;
  }

  return {
    root: [banner, prompt],
    /** Call before fetching the page's alerts; pass the result to `setAlerts`. */
    mark() {
      return eventSeq;
    },
    /** The agent's open alerts (any rule; wet lots are picked here), fetched after `mark`. */
    setAlerts(alerts, mark) {
      firing.clear();
      const open = new Set();
      for (const a of alerts || []) {
        if (a.rule !== WET_LOT) continue;
        open.add(episode(a));
        if (a.state === "firing") firing.set(episode(a), a);
      }
      for (const [key, entry] of fromEvents) {
        if (entry.seq <= mark) fromEvents.delete(key);
        else apply(entry.doc);
      }
      const kept = new Set([...silenced].filter((k) => open.has(k) || fromEvents.has(k)));
      if (kept.size !== silenced.size) {
        silenced = kept;
        saveSilenced();
      }
      render();
    },
    /** One `alert` event from the live stream. */
    onAlert(doc) {
      if (!apply(doc)) return;
      fromEvents.set(episode(doc), {seq: ++eventSeq, doc});
      render();
    },
    destroy() {
      destroyed = true;
      document.removeEventListener("click", onGesture, true);
      document.removeEventListener("keydown", onGesture, true);
      audio.pause();
    },
  };
}
