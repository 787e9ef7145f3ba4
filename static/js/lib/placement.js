// The placement scale (1 very liberal … 7 very conservative): the application form asks
// it, the staff pages show and filter by it.

import { t } from "./i18n.js";
import { el } from "./ui.js";

export const PLACEMENT_KEYS = [
  "apply.placement_1",
  "apply.placement_2",
  "apply.placement_3",
  "apply.placement_4",
  "apply.placement_5",
  "apply.placement_6",
  "apply.placement_7",
];

/** A point on the scale in words: "2 · Liberal". */
export function placementText(n) {
  return `${n} · ${t(PLACEMENT_KEYS[n - 1])}`;
}

/** The form's radio buttons, #f-placement-1 … 7, each with its label. */
export function placementChoices() {
  return PLACEMENT_KEYS.map((key, index) => {
    const id = `f-placement-${index + 1}`;
    return el("div", { className: "scale-option" }, [
      el("input", { attrs: { type: "radio", id, name: "placement", value: String(index + 1) } }),
      el("label", { i18n: key, attrs: { for: id } }),
    ]);
  });
}
