// A link staff hand on (a seat's join link, a participant's copy link): shown read-only
// with a Copy button, copied with the Clipboard API where the page may use it (a secure
// context), else by selecting it and the older copy command.

import { t } from "./i18n.js";
import { el } from "./ui.js";

async function copyToClipboard(input, status) {
  let copied = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch {
      copied = false;
    }
  }
  if (!copied) {
    input.select();
    try {
      copied = document.execCommand("copy");
    } catch {
      copied = false;
    }
  }
  status.textContent = copied ? t("staff.copied") : t("staff.copy_failed");
}

/**
 * A `.link-item` for a list of links: `label` (text or nodes) names it, `who` is whose
 * link it is (for the Copy button's name), `seat` goes in data-seat.
 */
export function linkItem({ id, url, label, who, seat }) {
  const status = el("span", { className: "copy-status", attrs: { role: "status" } });
  const input = el("input", {
    className: "link-input",
    attrs: { type: "text", id, readonly: true, value: url },
    on: { focus: () => input.select() },
  });
  const button = el("button", {
    text: t("staff.copy"),
    attrs: { type: "button", "aria-label": t("staff.copy_label", { who }) },
    on: { click: () => copyToClipboard(input, status) },
  });
  return el("li", { className: "link-item", dataset: { seat } }, [
    el("label", { attrs: { for: id } }, [label].flat()),
    el("div", { className: "link-row" }, [input, button]),
    status,
  ]);
}
