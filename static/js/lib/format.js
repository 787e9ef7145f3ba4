// Numbers, times and states in words people read, in the page's language.

import { language, t } from "./i18n.js";

/** 754 s → "12:34"; 3725 s → "1:02:05". */
export function formatClock(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A time of day: "14:05" (or "02:05 PM", as the language writes it). */
export function formatTimeOfDay(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString(language(), {
    hour: "2-digit",
    minute: "2-digit",
  });
}

/** Bytes in words people read: 1.2 MB. */
export function formatBytes(bytes) {
  if (bytes < 1000) {
    return `${bytes} B`;
  }
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A date from epoch seconds, with its time unless `withTime` is false. */
export function formatDate(epochSeconds, withTime = true) {
  const options = withTime ? { dateStyle: "medium", timeStyle: "short" } : { dateStyle: "medium" };
  return new Date(epochSeconds * 1000).toLocaleString(document.documentElement.lang, options);
}

/** A recording's state in words ("Recording ready"), else the state as it is; while its
 * files are being prepared, with how far along ("Preparing the files · 42%"). The staff
 * lists and the recording page all say it this way. */
export function recordingLabel(state, percent = null) {
  const key = `rec.${state}`;
  const text = t(key);
  const label = text === key ? state : text;
  if (state === "finalizing" && percent !== null && percent !== undefined) {
    return t("rec.percent", { label, n: Math.round(percent) });
  }
  return label;
}
