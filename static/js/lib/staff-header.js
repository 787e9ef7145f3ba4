// The staff pages' header, drawn here once for all of them: the top bar with who is
// signed in and the sign-out button, and the navigation between the staff pages.

import { drawTopbar } from "./topbar.js";
import { el } from "./ui.js";

const PAGES = [
  { name: "sessions", href: "/staff", key: "archive.nav_sessions" },
  { name: "recordings", href: "/staff/recordings", key: "archive.nav_recordings" },
  { name: "audit", href: "/staff/audit", key: "archive.nav_audit" },
  { name: "applications", href: "/staff/applications", key: "archive.nav_applications" },
];

/** Draw the header and the navigation with `current` (a name in PAGES) as this page. */
export function drawStaffHeader(current) {
  const header = drawTopbar({
    heading: "staff.heading",
    status: [
      el("span", { className: "signed-in-as", attrs: { id: "signed-in-as" } }),
      el("button", {
        className: "quiet small",
        i18n: "staff.sign_out",
        attrs: { type: "button", id: "sign-out" },
      }),
    ],
  });
  const links = PAGES.map(({ name, href, key }) =>
    el("li", {}, [
      el("a", {
        i18n: key,
        attrs: { href, "aria-current": name === current ? "page" : null },
        dataset: { nav: name },
      }),
    ]),
  );
  header.after(
    el("nav", { className: "section-nav staff-nav", i18nAttrs: { "aria-label": "archive.nav" } }, [
      el("ul", {}, links),
    ]),
  );
}
