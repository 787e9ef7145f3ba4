// The facilitator roster as staff see it, on the applications page (where matching plans
// with it) and the people page (where an organisation's admins look after their people):
// one line per facilitator, whether they are active, and a button to change that.

import { DAY_KEYS } from "./availability.js";
import { languageName, t } from "./i18n.js";
import { el } from "./ui.js";

/** Languages by their names, in the page's language: "English, Spanish". */
export function languagesText(codes) {
  return codes.map(languageName).join(", ");
}

/** A weekly availability window: "Tuesday 17:00–22:00". */
export function windowText(w) {
  return `${t(DAY_KEYS[w.day])} ${w.start}–${w.end}`;
}

/**
 * The roster's list items (a hint when it is empty); `toggle(f, active)` is called when
 * the button of facilitator `f` asks to make them active (true) or inactive (false).
 */
export function facilitatorItems(facilitators, toggle) {
  const items = facilitators.map((f) =>
    el("li", { className: "facilitator", dataset: { facilitator: f.id } }, [
      el("span", {
        text: t("applications.facilitator_line", {
          name: f.first_name,
          languages: languagesText(f.speaks),
          zone: f.time_zone,
          times: f.availability.map(windowText).join("; "),
        }),
      }),
      el("span", {
        className: "state-tag",
        text: t(f.active ? "applications.active" : "applications.inactive"),
      }),
      el("button", {
        className: "quiet small",
        text: t(f.active ? "applications.deactivate" : "applications.activate"),
        attrs: { type: "button" },
        on: { click: () => toggle(f, !f.active) },
      }),
    ]),
  );
  if (!items.length) {
    items.push(el("li", { className: "hint", text: t("applications.no_facilitators") }));
  }
  return items;
}

/** The API path that makes facilitator `f` active or inactive (POST). */
export function activationPath(f, active) {
  return `/api/facilitators/${encodeURIComponent(f.id)}/${active ? "activate" : "deactivate"}`;
}
