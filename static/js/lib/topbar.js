// The bar at the top of every page but the front one: a skip link, the brand and the
// page's heading, the page's status (recording and connection, who is signed in) and
// the language switch. A page holds an empty <header class="topbar"> and draws it here.

import {
  LANGUAGES,
  bindLanguageSelect,
  browserLanguage,
  chosenLanguage,
  languageName,
  rememberLanguage,
  setLanguage,
} from "./i18n.js";
import { $, el } from "./ui.js";

/**
 * Draw the bar: `heading` beside the brand is a catalogue key or a node of the page's
 * own (the room's session title); `status` the nodes of the status area, if any.
 */
export function drawTopbar({ heading = null, status = null } = {}) {
  const header = $("header.topbar");
  header.before(el("a", { className: "skip-link", i18n: "common.skip", attrs: { href: "#main" } }));
  const title =
    typeof heading === "string" ? el("span", { className: "session-title", i18n: heading }) : heading;
  const parts = [
    el("div", { className: "topbar-title" }, [el("span", { className: "brand", text: "storyroom" }), title]),
    status ? el("div", { className: "topbar-status" }, status) : null,
    el("div", { className: "lang-switch" }, [
      el("label", { i18n: "common.language", attrs: { for: "lang-select" } }),
      el(
        "select",
        { attrs: { id: "lang-select" } },
        LANGUAGES.map((lang) => el("option", { text: languageName(lang), attrs: { value: lang, lang } })),
      ),
    ]),
  ];
  header.replaceChildren(...parts.filter(Boolean));
  return header;
}

/**
 * Set the page's language to `first` (by default the one chosen before for `scope`, else
 * the browser's); a choice in the bar's select is remembered for `scope` (the staff
 * pages, one session's pages, the form).
 */
export async function startLanguage(scope, first = chosenLanguage(scope) || browserLanguage()) {
  await setLanguage(first);
  bindLanguageSelect($("#lang-select"), async (lang) => {
    rememberLanguage(scope, lang);
    await setLanguage(lang);
  });
}
