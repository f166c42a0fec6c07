// Descascadores (hullers) page: per huller, running or stopped, production
// figures, service tasks against their intervals (with the form to record a
// service), and running hours per day.
//
// Huller readings come once per counter poll (about every second), so unlike the
// warehouse page a reading does not trigger a refetch: it updates the figures
// from its own fields, moves each task's hours on by the running hours the
// reading adds (the same rule as agent/maintenance.py: due from interval minus
// warn_before_h, overdue from the interval) and today's bar. The page refetches
// when a service is recorded, when the stream reconnects, at a new day, and when
// the agent reports a huller's health changed while its readings have stopped
// (it may have gone offline). Nothing polls.

import {t, tCode} from "../i18n.js";
import {apiPath, getJSON, postJSON} from "./api.js";
import {HoursChart} from "./charts.js";
import {h, setText, syncKeyed} from "./dom.js";
import {dateTime, num, syncClock} from "./format.js";
import {badge, empty, figure, loginHint, message, relTime, runAction, setBadge, setRelTime} from "./widgets.js";

const SILENT_MS = 3000; // no reading for this long: a health change may mean offline
const TASK_BADGE = {ok: "ok", due: "warn", overdue: "bad", unknown: "off"};

/** Move a task on by `hours` of running, as the agent would (agent/maintenance.py, task_status). */
function advanceTask(task, hours) {
  if (typeof task.hours_since !== "number") return; // unknown stays unknown until the agent says
  task.hours_since += hours;
  task.remaining_h = task.interval_h - task.hours_since;
  if (task.hours_since >= task.interval_h) task.state = "overdue";
  else if (task.hours_since >= task.interval_h - (task.warn_before_h ?? 0)) task.state = "due";
  else task.state = "ok";
}

export function createDescascadores(ctx) {
  const hullers = new Map(); // id -> latest huller doc
  const lastReadingAt = new Map(); // id -> Date.now() of its latest live reading
  const grid = h("div", {class: "hullers"});
  const root = h("div", {class: "page page--descascadores"}, h("h1", {class: "sr-only"}, t("hullers.title")), grid);

  function createHuller(u) {
    const f = {
      bagsHour: figure(t("huller.bagsHour"), "huller-bags-hour"),
      bagsToday: figure(t("huller.bagsToday"), "huller-bags-today"),
      hoursToday: figure(t("huller.hoursToday"), "huller-hours-today"),
      hoursTotal: figure(t("huller.hoursTotal"), "huller-hours-total"),
    };
    const chartBox = h("div", {class: "chart chart--bars", testid: `hours-chart-${u.id}`});
    const el = h(
      "article",
      {class: "panel huller", testid: `huller-${u.id}`},
      h(
        "header",
        {class: "huller__head"},
        h("div", null, h("h2", {class: "huller__name"}, u.name || u.id), h("p", {class: "huller__station"})),
        h(
          "div",
          {class: "huller__link"},
          badge("off", "", "huller-online", "badge--small"),
          h("span", {class: "huller__seen"}, t("huller.lastSeen"), " ", relTime(null, "huller-last-seen")),
        ),
      ),
      h(
        "div",
        {class: "huller__body"},
        badge("off", "", "huller-running", "badge--huge"),
        h("div", {class: "figures"}, f.bagsHour.el, f.bagsToday.el, f.hoursToday.el, f.hoursTotal.el),
      ),
      h(
        "section",
        {class: "tasks", "aria-label": t("huller.tasks")},
        h("h3", {class: "section-title"}, t("huller.tasks")),
        loginHint(ctx), // once per huller rather than under every task
        h("ul", {class: "tasks__list"}),
      ),
      h("section", {class: "huller__chart"}, h("h3", {class: "section-title"}, t("huller.chart")), chartBox),
    );
    el._figures = f;
    el._chart = new HoursChart(chartBox);
    return el;
  }

  function updateHuller(el, u) {
    const q = (id) => el.querySelector(`[data-testid="${id}"]`);
    setText(el.querySelector(".huller__station"), u.station ? t("huller.station", {station: u.station}) : "");
    setBadge(q("huller-online"), u.online ? "ok" : "off", u.online ? t("common.online") : t("common.offline"));
    setRelTime(q("huller-last-seen"), u.last_seen_ns ?? null);
    updateFigures(el, u);
    syncKeyed(
      el.querySelector(".tasks__list"),
      u.tasks || [],
      (task) => task.task,
      (task) => createTask(u, task),
      updateTask,
    );
    el._chart.setDays(u.daily_hours || []);
  }

  function updateFigures(el, u) {
    const running = u.running === true ? "running" : u.running === false ? "stopped" : "unknown";
    setBadge(
      el.querySelector('[data-testid="huller-running"]'),
      running === "running" ? "ok" : running === "stopped" ? "off" : "info",
      t(`huller.${running}`),
    );
    el.classList.toggle("is-running", running === "running");
    const f = el._figures;
    setText(f.bagsHour.value, num(u.bags_per_hour, 1));
    setText(f.bagsToday.value, num(u.bags_today, 0));
    setText(f.hoursToday.value, typeof u.hours_today === "number" ? `${num(u.hours_today, 1)} h` : t("common.none"));
    setText(f.hoursTotal.value, typeof u.hours_total === "number" ? `${num(u.hours_total, 1)} h` : t("common.none"));
  }

  function createTask(u, task) {
    const bar = h("div", {class: "progress__bar"});
    const warnMark = h("div", {class: "progress__warn"});
    const progress = h("div", {class: "progress", role: "progressbar", "aria-valuemin": "0"}, bar, warnMark);
    const li = h(
      "li",
      {class: "task", testid: `task-${u.id}-${task.task}`},
      h("div", {class: "task__head"}, h("span", {class: "task__name"}), badge("off", "", "task-state")),
      progress,
      h(
        "p",
        {class: "task__hours"},
        h("strong", {testid: "task-hours-since"}),
        " ",
        h("span", {class: "task__interval"}),
        h("span", {class: "task__remaining"}),
      ),
      h("p", {class: "task__last", testid: "task-last-service"}),
      serviceForm(u, task),
    );
    li._progress = {progress, bar, warnMark};
    return li;
  }

  function updateTask(li, task) {
    const state = TASK_BADGE[task.state] ? task.state : "unknown";
    li.dataset.state = state;
    setText(li.querySelector(".task__name"), task.name || task.task);
    setBadge(li.querySelector('[data-testid="task-state"]'), TASK_BADGE[state], tCode("task.state", state));
    const since = task.hours_since;
    const interval = task.interval_h;
    setText(
      li.querySelector('[data-testid="task-hours-since"]'),
      typeof since === "number" ? `${num(since, 1)} h` : t("common.none"),
    );
    setText(
      li.querySelector(".task__interval"),
      typeof interval === "number" ? t("task.of", {interval: num(interval, 0)}) : "",
    );
    let remaining = "";
    if (typeof task.remaining_h === "number") {
      remaining =
        task.remaining_h >= 0
          ? t("task.remaining", {h: num(task.remaining_h, 1)})
          : t("task.overdueBy", {h: num(-task.remaining_h, 1)});
    }
    setText(li.querySelector(".task__remaining"), remaining ? ` · ${remaining}` : "");

    // The bar fills with hours since service; the tick marks where "due" starts.
    // Widths go through CSSOM (element.style), which the CSP allows; style attributes it does not.
    const {progress, bar, warnMark} = li._progress;
    const ratio = typeof since === "number" && interval > 0 ? Math.max(0, Math.min(1, since / interval)) : 0;
    bar.style.width = `${(ratio * 100).toFixed(1)}%`;
    progress.setAttribute("aria-valuemax", String(interval ?? 0));
    progress.setAttribute("aria-valuenow", String(typeof since === "number" ? Math.min(since, interval ?? since) : 0));
    const warnAt = interval > 0 && task.warn_before_h > 0 ? 1 - task.warn_before_h / interval : null;
    warnMark.hidden = warnAt === null || warnAt <= 0;
    if (warnAt !== null) warnMark.style.left = `${(warnAt * 100).toFixed(1)}%`;

    const last = task.last_service;
    const lastEl = li.querySelector(".task__last");
    if (last) {
      const line = t("task.lastService", {time: dateTime(last.done_at_ns), by: last.by || t("common.none")});
      setText(lastEl, last.note ? `${line} — ${t("task.lastServiceNote", {note: last.note})}` : line);
    } else {
      setText(lastEl, t("task.never"));
    }
  }

  function serviceForm(u, task) {
    if (!ctx.session.can_write) return null;
    const inputId = `note-${u.id}-${task.task}`.replace(/[^a-zA-Z0-9_-]/g, "_");
    const input = h("input", {
      id: inputId,
      class: "input",
      testid: "service-note",
      name: "note",
      type: "text",
      maxlength: "200",
      autocomplete: "off",
      placeholder: t("service.notePlaceholder"),
    });
    const msg = message("service-message");
    const form = h(
      "form",
      {class: "service-form", testid: `service-form-${u.id}-${task.task}`, novalidate: true},
      h("label", {class: "service-form__label", for: inputId}, t("service.note")),
      h(
        "div",
        {class: "service-form__row"},
        input,
        h("button", {type: "submit", class: "btn btn--primary", testid: "service-submit"}, t("service.submit")),
      ),
      msg,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const ok = await runAction({
        form,
        messageEl: msg,
        action: () => postJSON(apiPath("hullers", u.id, "services"), {task: task.task, note: input.value.trim()}),
        success: t("service.saved"),
        onAuthLost: ctx.authLost,
      });
      if (ok) {
        input.value = "";
        ctx.refetch();
      }
    });
    return form;
  }

  function render(list) {
    if (!list.length) {
      grid.replaceChildren(empty(t("hullers.none")));
      return;
    }
    for (const node of Array.from(grid.children)) if (node.dataset.key === undefined) node.remove();
    syncKeyed(
      grid,
      list,
      (u) => u.id,
      createHuller,
      updateHuller,
      (el) => el._chart.destroy(),
    );
  }

  async function load() {
    const doc = await getJSON("/api/hullers");
    syncClock(doc.now_ns);
    hullers.clear();
    for (const u of doc.hullers || []) {
      hullers.set(u.id, u);
      lastReadingAt.set(u.id, Date.now()); // as fresh as a reading: no need to refetch on its health
    }
    render(doc.hullers || []);
  }

  function onReading(r) {
    if (r.measurement !== "huller") return;
    const u = hullers.get(r.device);
    if (!u) {
      ctx.refetch();
      return;
    }
    const f = r.fields || {};
    lastReadingAt.set(r.device, Date.now());
    const days = u.daily_hours || [];
    const today = days.length ? days[days.length - 1] : null;
    if (today && typeof f.hours_today === "number" && f.hours_today < (today.hours ?? 0)) {
      ctx.refetch(); // hours_today went back to 0: a new day, the server knows its date
    }
    if (typeof f.hours_total === "number" && typeof u.hours_total === "number" && f.hours_total > u.hours_total) {
      for (const task of u.tasks || []) advanceTask(task, f.hours_total - u.hours_total);
    }
    if (typeof f.running === "boolean") u.running = f.running;
    for (const k of ["bags_per_hour", "bags_today", "bags_total", "hours_today", "hours_total"]) {
      if (typeof f[k] === "number") u[k] = f[k];
    }
    u.online = true;
    u.last_seen_ns = r.ts_ns;
    const el = grid.querySelector(`[data-testid="huller-${CSS.escape(r.device)}"]`);
    if (!el) return;
    updateFigures(el, u);
    setBadge(el.querySelector('[data-testid="huller-online"]'), "ok", t("common.online"));
    setRelTime(el.querySelector('[data-testid="huller-last-seen"]'), r.ts_ns);
    const list = el.querySelector(".tasks__list");
    for (const task of u.tasks || []) {
      const li = list.querySelector(`[data-testid="task-${CSS.escape(u.id)}-${CSS.escape(task.task)}"]`);
      if (li) updateTask(li, task);
    }
    // Today's bar follows hours_today (the last entry of daily_hours is today).
    if (today && typeof f.hours_today === "number" && f.hours_today >= (today.hours ?? 0)) {
      days[days.length - 1] = {...today, hours: f.hours_today};
      el._chart.setDays(days);
    }
  }

  function onDevices(names) {
    const quiet = (names || []).some(
      (name) => hullers.has(name) && Date.now() - (lastReadingAt.get(name) ?? 0) > SILENT_MS,
    );
    if (quiet) ctx.refetch();
  }

  return {
    root,
    load,
    onEvent(type, payload) {
      if (type === "reading") onReading(payload);
      else if (type === "service") ctx.refetch();
      else if (type === "devices") onDevices(payload.devices);
    },
    destroy() {
      for (const el of grid.querySelectorAll(".huller")) el._chart?.destroy();
    },
  };
}
