// Staff: read the audit log (newest first, page back with "Older"). Nothing here can
// change it; the server has no route that would.

import { formatDate } from "../lib/format.js";
import { onLanguageChange, t } from "../lib/i18n.js";
import { api, apiError, startStaffPage } from "../lib/staff-session.js";
import { $, el, tableHead } from "../lib/ui.js";

const ACTION_KEYS = {
  sign_in: "audit.action_sign_in",
  sign_in_failed: "audit.action_sign_in_failed",
  sign_out: "audit.action_sign_out",
  download: "audit.action_download",
  edit: "audit.action_edit",
  consent: "audit.action_consent",
  copies_issued: "audit.action_copies_issued",
  copy_revoked: "audit.action_copy_revoked",
  copy_resent: "audit.action_copy_resent",
  contact_changed: "audit.action_contact_changed",
  clip: "audit.action_clip",
  export: "audit.action_export",
  delete: "audit.action_delete",
  application_withdrawn: "audit.action_application_withdrawn",
  application_deleted: "audit.action_application_deleted",
  matching_run: "audit.action_matching_run",
  proposal_accepted: "audit.action_proposal_accepted",
  proposal_rejected: "audit.action_proposal_rejected",
  proposal_scheduled: "audit.action_proposal_scheduled",
  schedule_confirmed: "audit.action_schedule_confirmed",
  facilitator_added: "audit.action_facilitator_added",
  facilitator_activated: "audit.action_facilitator_activated",
  facilitator_deactivated: "audit.action_facilitator_deactivated",
  outbox_read: "audit.action_outbox_read",
  seat_link_reissued: "audit.action_seat_link_reissued",
  schedule_moved: "audit.action_schedule_moved",
  schedule_cancelled: "audit.action_schedule_cancelled",
};
const PAGE_SIZE = 100;

const page = { entries: [], more: false, error: null };

function detailText(entry) {
  return Object.entries(entry.detail || {})
    .map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(", ") : value}`)
    .join(" · ");
}

function target(entry) {
  if (entry.target && entry.target.startsWith("rec_") && entry.action !== "delete") {
    return el("a", { text: entry.target, attrs: { href: `/staff/recordings/${entry.target}` } });
  }
  return el("span", { text: entry.target || "" });
}

function render() {
  $("#audit-body").replaceChildren(
    ...page.entries.map((entry) =>
      el("tr", { dataset: { action: entry.action } }, [
        el("td", { text: formatDate(entry.at) }),
        el("td", {}, [
          el("span", { className: "row-title", text: entry.actor }),
          el("span", { className: "row-id", text: entry.address || "" }),
        ]),
        el("td", { text: ACTION_KEYS[entry.action] ? t(ACTION_KEYS[entry.action]) : entry.action }),
        el("td", {}, [target(entry)]),
        el("td", { className: "detail-text", text: detailText(entry) }),
      ]),
    ),
  );
  $("#older").hidden = !page.more;
  $("#audit-status").textContent =
    page.error || (page.entries.length ? t("audit.count", { n: page.entries.length }) : t("audit.empty"));
}

async function load(older) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const action = $("#a-action").value;
  if (action) {
    query.set("action", action);
  }
  if (older && page.entries.length) {
    query.set("before", String(page.entries[page.entries.length - 1].id));
  }
  const result = await api("GET", `/api/audit?${query}`);
  if (result.status !== 200) {
    page.error = apiError(result);
  } else {
    page.error = null;
    page.entries = older ? page.entries.concat(result.body.entries) : result.body.entries;
    page.more = result.body.entries.length === PAGE_SIZE;
  }
  render();
}

async function main() {
  tableHead($("#audit-table"), [
    "audit.col_when",
    "audit.col_who",
    "audit.col_action",
    "audit.col_target",
    "audit.col_detail",
  ]);
  $("#a-action").append(
    ...Object.entries(ACTION_KEYS).map(([value, key]) => el("option", { i18n: key, attrs: { value } })),
  );
  if (!(await startStaffPage("audit"))) {
    return;
  }
  onLanguageChange(render);
  $("#a-action").addEventListener("change", () => load(false));
  $("#audit-form").addEventListener("submit", (event) => event.preventDefault());
  $("#older").addEventListener("click", () => load(true));
  await load(false);
}

main();
