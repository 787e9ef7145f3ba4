// The staff pages' header, drawn here once for all of them: the top bar with who is
// signed in and the sign-out button, and the navigation between the staff pages.

import { drawTopbar } from "./topbar.js";
import { el } from "./ui.js";

const PAGES = [
  { name: "sessions", href: "/staff", key: "archive.nav_sessions" },
  { name: "recordings", href: "/staff/recordings", key: "archive.nav_recordings" },
  { name: "audit", href: "/staff/audit", key: "archive.nav_audit" },
  { name: "applications", href: "/staff/applications", key: "archive.nav_applications" },
  // drawn hidden: showAdminLinks() shows it to an organisation's admins and platform admins
  { name: "people", href: "/staff/people", key: "archive.nav_people", admin: true },
];
const ADMIN_ROLES = new Set(["admin", "platform"]);

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
  const links = PAGES.map(({ name, href, key, admin = false }) =>
    el("li", { attrs: { hidden: admin }, dataset: admin ? { adminOnly: "" } : {} }, [
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

/** Whether `role` (from /api/staff/me) may add and remove people. */
export function isAdmin(role) {
  return ADMIN_ROLES.has(role);
}

/** Show the links only admins may follow, once the signed-in person's `role` is known. */
export function showAdminLinks(role) {
  for (const item of document.querySelectorAll(".staff-nav [data-admin-only]")) {
    item.hidden = !isAdmin(role);
  }
}
