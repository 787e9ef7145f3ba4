// Staff sign-in: email and password for a session cookie (HttpOnly, SameSite=Strict).
// The form carries the sign-in CSRF token the server set beside it (double submit).

import { callApi } from "../lib/api.js";
import { t } from "../lib/i18n.js";
import { drawTopbar, startLanguage } from "../lib/topbar.js";
import { $ } from "../lib/ui.js";

let csrf = null;

/** Where to go after signing in: one of our own staff pages, never another site. */
function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "";
  return /^\/staff(\/[A-Za-z0-9_/-]*)?(\?[^#]*)?$/.test(next) ? next : "/staff/recordings";
}

async function fetchCsrf() {
  const result = await callApi("GET", "/api/staff/csrf");
  csrf = result.status === 200 ? result.body.csrf : null;
}

async function signIn(event) {
  event.preventDefault();
  const status = $("#sign-in-status");
  status.textContent = t("staff.signing_in");
  if (!csrf) {
    await fetchCsrf();
  }
  const result = await callApi("POST", "/api/staff/signin", {
    body: { email: $("#email").value.trim(), password: $("#password").value },
    csrf,
  });
  if (result.status === 0) {
    status.textContent = t("staff.error_network");
    return;
  }
  if (result.status === 200) {
    status.textContent = "";
    location.assign(nextPage());
    return;
  }
  $("#password").value = "";
  if (result.status === 429) {
    status.textContent = t("signin.error_rate_limited");
  } else if (result.status === 403) {
    await fetchCsrf();
    status.textContent = t("archive.error_csrf");
  } else {
    status.textContent = t("signin.error_wrong");
  }
  $("#password").focus();
}

async function main() {
  drawTopbar({ heading: "staff.heading" });
  await startLanguage("staff");
  $("#sign-in-form").addEventListener("submit", signIn);
  await fetchCsrf();
  $("#email").focus();
}

main();
