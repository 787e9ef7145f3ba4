// Staff: an organisation's people. Its admins see its staff accounts, add one (email,
// a temporary password, staff or admin) and remove one after a confirmation; a platform
// admin also sees every organisation, creates one, and adds accounts to any of them.
// Its facilitators are listed here to deactivate or activate; they are added on the
// applications page, with the availability matching plans from.
// Everything shown from the server goes in as text.

import { activationPath, facilitatorItems } from "../lib/facilitators.js";
import { formatDate } from "../lib/format.js";
import { onLanguageChange, t, translatePage } from "../lib/i18n.js";
import { isAdmin } from "../lib/staff-header.js";
import { api, apiError, signedIn, startStaffPage } from "../lib/staff-session.js";
import { refusal } from "../lib/api.js";
import { $, confirmDialog, el, tableHead } from "../lib/ui.js";

// refusals people can act on, in the page's language; the server's words otherwise
const ERROR_KEYS = {
  admin_only: "people.error_admin_only",
  own_account: "people.error_own_account",
  exists: "people.error_exists",
  weak_password: "people.error_weak_password",
  invalid_email: "people.error_email",
  platform_only: "people.error_platform_only",
};
const ROLE_KEYS = {
  staff: "people.role_staff",
  admin: "people.role_admin",
  platform: "people.role_platform",
};

const page = { accounts: [], organisations: [], facilitators: [], me: null, error: null };

function refusalText(result) {
  const error = refusal(result);
  const key = error && ERROR_KEYS[error.code];
  return key ? t(key) : apiError(result);
}

function platform() {
  return page.me && page.me.role === "platform";
}

function organisationName(orgId) {
  const org = page.organisations.find((o) => o.id === orgId);
  return org ? org.name || org.slug : "";
}

// -- staff accounts ------------------------------------------------------------------------

function accountRow(account) {
  const own = account.email === page.me.email;
  const cells = [
    el("td", {}, [el("span", { className: "row-title", text: account.email })]),
    el("td", { text: t(ROLE_KEYS[account.role] || "people.role_staff") }),
  ];
  if (platform()) {
    cells.push(el("td", { text: organisationName(account.org_id) }));
  }
  cells.push(el("td", { text: formatDate(account.created_at, false) }));
  cells.push(
    el("td", {}, [
      own
        ? el("span", { className: "hint", text: t("people.you") })
        : el("button", {
            className: "danger small",
            text: t("people.remove"),
            attrs: { type: "button", "aria-label": t("people.remove_label", { email: account.email }) },
            on: { click: () => removeAccount(account) },
          }),
    ]),
  );
  return el("tr", { dataset: { account: account.id, email: account.email } }, cells);
}

function renderAccounts() {
  $("#accounts-body").replaceChildren(...page.accounts.map(accountRow));
  $("#accounts-status").textContent =
    page.error || t(page.accounts.length === 1 ? "people.accounts_count_one" : "people.accounts_count_other", {
      n: page.accounts.length,
    });
}

async function loadAccounts() {
  const result = await api("GET", "/api/staff/accounts");
  if (result.status === 200) {
    page.error = null;
    page.accounts = result.body.accounts;
  } else {
    page.error = refusalText(result);
    page.accounts = [];
  }
  renderAccounts();
  return result.status === 200;
}

async function addAccount(event) {
  event.preventDefault();
  const body = {
    email: $("#acc-email").value.trim(),
    password: $("#acc-password").value,
    role: $("#acc-role").value,
  };
  if (platform() && $("#acc-organisation").value) {
    body.organisation = $("#acc-organisation").value;
  }
  const status = $("#account-status");
  status.textContent = t("common.saving");
  const result = await api("POST", "/api/staff/accounts", body);
  if (result.status !== 201) {
    status.textContent = refusalText(result);
    return;
  }
  status.textContent = t("people.added", { email: result.body.email });
  $("#acc-email").value = "";
  $("#acc-password").value = "";
  await loadAccounts();
  await loadFacilitators();
}

async function removeAccount(account) {
  const sure = await confirmDialog({
    title: t("people.remove_title"),
    body: t("people.remove_body", { email: account.email }),
    confirm: t("people.remove"),
    danger: true,
  });
  if (!sure) {
    return;
  }
  const status = $("#account-status");
  const result = await api("DELETE", `/api/staff/accounts/${encodeURIComponent(account.id)}`);
  status.textContent =
    result.status === 200 ? t("people.removed", { email: account.email }) : refusalText(result);
  await loadAccounts();
  await loadFacilitators();
}

// -- facilitators ------------------------------------------------------------------------

function renderFacilitators() {
  $("#facilitator-list").replaceChildren(...facilitatorItems(page.facilitators, setActive));
}

async function loadFacilitators() {
  const result = await api("GET", "/api/facilitators");
  if (result.status === 200) {
    page.facilitators = result.body.facilitators;
  }
  renderFacilitators();
}

async function setActive(f, active) {
  const result = await api("POST", activationPath(f, active));
  $("#facilitator-status").textContent =
    result.status === 200
      ? t(active ? "people.facilitator_activated" : "people.facilitator_deactivated", {
          name: f.first_name,
        })
      : refusalText(result);
  await loadFacilitators();
}

// -- organisations (platform admins) -------------------------------------------------------

function renderOrganisations() {
  $("#organisations-body").replaceChildren(
    ...page.organisations.map((org) =>
      el("tr", { dataset: { organisation: org.slug } }, [
        el("td", {}, [el("span", { className: "row-title", text: org.slug })]),
        el("td", { text: org.name || "" }),
        el("td", { text: org.contact || "" }),
      ]),
    ),
  );
  const choice = $("#acc-organisation");
  const chosen = choice.value;
  choice.replaceChildren(
    el("option", { text: t("people.own_organisation"), attrs: { value: "" } }),
    ...page.organisations.map((org) =>
      el("option", { text: org.name ? `${org.name} (${org.slug})` : org.slug, attrs: { value: org.slug } }),
    ),
  );
  choice.value = page.organisations.some((org) => org.slug === chosen) ? chosen : "";
}

async function loadOrganisations() {
  const result = await api("GET", "/api/organisations");
  if (result.status === 200) {
    page.organisations = result.body.organisations;
  }
  renderOrganisations();
}

async function addOrganisation(event) {
  event.preventDefault();
  const contact = $("#org-contact").value.trim();
  const body = { slug: $("#org-slug").value.trim(), name: $("#org-name").value.trim() };
  if (contact) {
    body.contact = contact;
  }
  const status = $("#organisation-status");
  if ($("#org-slug").validity.patternMismatch) {
    // the server says the same (storyroom.orgs.SLUG_RE), but only in English
    status.textContent = t("people.error_slug");
    return;
  }
  status.textContent = t("common.saving");
  const result = await api("POST", "/api/organisations", body);
  if (result.status !== 201) {
    status.textContent = refusalText(result);
    return;
  }
  status.textContent = t("people.organisation_created", { name: result.body.name });
  for (const id of ["#org-slug", "#org-name", "#org-contact"]) {
    $(id).value = "";
  }
  await loadOrganisations();
  renderAccounts();
}

/** The tables' column headings, once the signed-in person's role is known. */
function drawHeadings() {
  const keys = ["people.col_email", "people.col_role"];
  if (platform()) {
    keys.push("people.col_organisation");
  }
  keys.push("people.col_added", "people.col_actions");
  tableHead($("#accounts-table"), keys, { hidden: ["people.col_actions"] });
  tableHead($("#organisations-table"), ["people.col_slug", "people.col_name", "people.col_contact"]);
  translatePage($("#main"));
}

function render() {
  renderAccounts();
  renderFacilitators();
  renderOrganisations();
}

async function main() {
  if (!(await startStaffPage("people"))) {
    return;
  }
  page.me = signedIn();
  drawHeadings();
  onLanguageChange(render);
  $("#organisations").hidden = !platform();
  $("#acc-organisation-field").hidden = !platform();
  $("#account-form").hidden = !isAdmin(page.me.role);
  $("#account-form").addEventListener("submit", addAccount);
  $("#organisation-form").addEventListener("submit", addOrganisation);
  await loadOrganisations();
  await loadAccounts();
  await loadFacilitators();
}

main();
