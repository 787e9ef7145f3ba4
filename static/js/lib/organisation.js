// An organisation's public face on the pages participants and applicants see: whose
// programme this is and how to reach it, always as text.

import { t } from "./i18n.js";
import { el } from "./ui.js";

/**
 * The lines that say whose programme this is: its name and its contact line. None for
 * an organisation without a name (the default one of a single-team install).
 */
export function organisationLines(org) {
  if (!org || !org.name) {
    return [];
  }
  const lines = [el("p", { className: "org-name", text: t("org.programme", { name: org.name }) })];
  if (org.contact) {
    lines.push(el("p", { className: "org-contact hint", text: t("org.contact", { contact: org.contact }) }));
  }
  return lines;
}

/** Fill `slot` with `org`'s lines, hiding it when there are none. */
export function showOrganisation(slot, org) {
  const lines = organisationLines(org);
  slot.replaceChildren(...lines);
  slot.hidden = lines.length === 0;
}
