// Staff sign-in: email and password for a session cookie (HttpOnly, SameSite=Strict).
// The form carries the sign-in CSRF token the server set beside it (double submit).

import {
  bindLanguageSelect,
  browserLanguage,
  chosenLanguage,
  rememberLanguage,
  setLanguage,
  t,
} from "../lib/i18n.js";
import { $ } from "../lib/ui.js";

let csrf = null;

/** Where to go after signing in: one of our own staff pages, never another site. */
function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "";
  return /^\/staff(\/[A-Za-z0-9_/-]*)?(\?[^#]*)?$/.test(next) ? next : "/staff/recordings";
}

async function fetchCsrf() {
  try {
    const response = await fetch("/api/staff/csrf", { credentials: "same-origin", cache: "no-store" });
    csrf = (await response.json()).csrf;
  } catch {
    csrf = null;
  }
}

async function signIn(event) {
  event.preventDefault();
  const status = $("#sign-in-status");
  status.textContent = t("staff.signing_in");
  if (!csrf) {
    await fetchCsrf();
  }
  let response = null;
  try {
    response = await fetch("/api/staff/signin", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
      body: JSON.stringify({ email: $("#email").value.trim(), password: $("#password").value }),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    status.textContent = t("staff.error_network");
    return;
  }
  if (response.ok) {
    status.textContent = "";
    location.assign(nextPage());
    return;
  }
  $("#password").value = "";
  if (response.status === 429) {
    status.textContent = t("signin.error_rate_limited");
  } else if (response.status === 403) {
    await fetchCsrf();
    status.textContent = t("archive.error_csrf");
  } else {
    status.textContent = t("signin.error_wrong");
  }
  $("#password").focus();
}

async function main() {
  await setLanguage(chosenLanguage("staff") || browserLanguage());
  bindLanguageSelect($("#lang-select"), async (lang) => {
    rememberLanguage("staff", lang);
    await setLanguage(lang);
  });
  $("#sign-in-form").addEventListener("submit", signIn);
  await fetchCsrf();
  $("#email").focus();
}

main();
