// Weekly availability rows (day, from, until) and time-zone choices, shared by the
// application form and the staff facilitator roster. Every control has its own label.

import { t } from "./i18n.js";
import { el } from "./ui.js";

// Monday first, as the server counts days (0 = Monday).
export const DAY_KEYS = [
  "apply.day_mon",
  "apply.day_tue",
  "apply.day_wed",
  "apply.day_thu",
  "apply.day_fri",
  "apply.day_sat",
  "apply.day_sun",
];

// US time zones by their everyday names; the browser's own zone is added when missing.
const ZONES = [
  ["America/New_York", "apply.tz_eastern"],
  ["America/Chicago", "apply.tz_central"],
  ["America/Denver", "apply.tz_mountain"],
  ["America/Phoenix", "apply.tz_arizona"],
  ["America/Los_Angeles", "apply.tz_pacific"],
  ["America/Anchorage", "apply.tz_alaska"],
  ["Pacific/Honolulu", "apply.tz_hawaii"],
  ["America/Puerto_Rico", "apply.tz_atlantic"],
];

export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch {
    return "";
  }
}

/** Fill a <select> with the zones, keeping its value (default: the browser's zone). */
export function fillTimeZones(select) {
  const keep = select.value || browserZone();
  const options = ZONES.map(([zone, key]) =>
    el("option", { text: `${t(key)} (${zone})`, attrs: { value: zone } }),
  );
  const own = browserZone();
  if (own && !ZONES.some(([zone]) => zone === own)) {
    options.push(el("option", { text: own, attrs: { value: own } }));
  }
  select.replaceChildren(...options);
  select.value = keep && [...select.options].some((o) => o.value === keep) ? keep : ZONES[0][0];
}

function clockOptions(first, last) {
  const out = [];
  for (let minutes = first; minutes <= last; minutes += 30) {
    const h = String(Math.floor(minutes / 60)).padStart(2, "0");
    const m = String(minutes % 60).padStart(2, "0");
    out.push(`${h}:${m}`);
  }
  return out;
}

const STARTS = clockOptions(0, 23 * 60);
const ENDS = clockOptions(90, 24 * 60);

let rowCount = 0;

/**
 * A list of availability rows in `list` (a <ul>): add(window) appends one, read()
 * returns [{day, start, end}], render() re-labels them after a language change.
 */
export function availabilityRows(list, prefix) {
  function labelled(kind, control, id) {
    return el("div", { className: "field" }, [
      el("label", { attrs: { for: id }, dataset: { key: kind } }),
      control,
    ]);
  }

  function select(id, values, value) {
    const node = el(
      "select",
      { attrs: { id } },
      values.map(([v, text]) => el("option", { text, attrs: { value: v } })),
    );
    node.value = value;
    return node;
  }

  function add(window = { day: "", start: "18:00", end: "20:00" }) {
    rowCount += 1;
    const id = `${prefix}-${rowCount}`;
    const day = select(
      `${id}-day`,
      [["", ""], ...DAY_KEYS.map((_, n) => [String(n), ""])],
      String(window.day),
    );
    const start = select(
      `${id}-start`,
      STARTS.map((v) => [v, v]),
      window.start,
    );
    const end = select(
      `${id}-end`,
      ENDS.map((v) => [v, v]),
      window.end,
    );
    const remove = el("button", {
      className: "quiet small",
      attrs: { type: "button" },
      on: {
        click: () => {
          const next = row.nextElementSibling || row.previousElementSibling;
          row.remove();
          const focus = next ? next.querySelector("select") : null;
          if (focus) {
            focus.focus();
          }
        },
      },
    });
    const row = el("li", { className: "window-row" }, [
      labelled("apply.window_day", day, `${id}-day`),
      labelled("apply.window_start", start, `${id}-start`),
      labelled("apply.window_end", end, `${id}-end`),
      remove,
    ]);
    list.append(row);
    render();
    return row;
  }

  function render() {
    for (const row of list.children) {
      for (const label of row.querySelectorAll("label")) {
        label.textContent = t(label.dataset.key);
      }
      const day = row.querySelector("select");
      day.options[0].textContent = t("apply.choose");
      DAY_KEYS.forEach((key, n) => {
        day.options[n + 1].textContent = t(key);
      });
      const button = row.querySelector("button");
      button.textContent = t("apply.remove_window");
    }
  }

  function read() {
    return [...list.children].map((row) => {
      const [day, start, end] = row.querySelectorAll("select");
      return {
        day: day.value === "" ? null : Number.parseInt(day.value, 10),
        start: start.value,
        end: end.value,
      };
    });
  }

  function clear() {
    list.replaceChildren();
  }

  return { add, read, render, clear };
}
