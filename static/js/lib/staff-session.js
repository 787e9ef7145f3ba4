// The staff pages' side of the session: the HttpOnly cookie rides along by itself; this
// module learns the CSRF token from /api/staff/me, sends it on every change, sends
// people to the sign-in page when the session is gone, and starts each staff page.

import { callApi, fetchMade, refusal } from "./api.js";
import { t } from "./i18n.js";
import { drawStaffHeader, showAdminLinks } from "./staff-header.js";
import { startLanguage } from "./topbar.js";
import { $ } from "./ui.js";

const session = { email: null, csrf: null, role: null, organisation: null };

/** Off to the sign-in page, coming back here after. */
export function toSignIn() {
  const next = `${location.pathname}${location.search}`;
  location.assign(`/staff/signin?next=${encodeURIComponent(next)}`);
}

/** Who is signed in, once startStaffPage() resolved true: {email, role, organisation}. */
export function signedIn() {
  return { email: session.email, role: session.role, organisation: session.organisation };
}

/** Call the API in the session; resolves to {status, body} and never throws. */
export async function api(method, path, body) {
  const result = await callApi(method, path, { body, csrf: session.csrf });
  if (result.status === 401) {
    toSignIn();
  }
  return result;
}

/** POST JSON in the session and take a file back: see fetchMade in api.js. */
export async function apiFile(path, body) {
  const result = await fetchMade(path, { body, csrf: session.csrf });
  if (result.status === 401) {
    toSignIn();
  }
  return result;
}

/** Words for a failed call: the catalogue's for what people can act on, else the server's. */
export function apiError(result) {
  if (result.status === 0) {
    return t("staff.error_network");
  }
  const error = refusal(result);
  if (error && error.code === "csrf_failed") {
    return t("archive.error_csrf");
  }
  return error && error.message ? error.message : t("error.generic");
}

async function signOut() {
  await api("POST", "/api/staff/signout");
  session.csrf = null;
  try {
    sessionStorage.clear(); // links shown once, kept in this tab until now
  } catch {
    // nothing was stored
  }
  location.assign("/staff/signin");
}

/**
 * Start a staff page: the header with `current` (see staff-header.js) as this page, the
 * language, who is signed in (else off to the sign-in page). Resolves to true once the
 * page may call the API.
 */
export async function startStaffPage(current) {
  drawStaffHeader(current);
  await startLanguage("staff");
  const me = await api("GET", "/api/staff/me");
  if (me.status !== 200 || !me.body || !me.body.csrf) {
    if (me.status !== 401) {
      toSignIn();
    }
    return false;
  }
  session.email = me.body.email;
  session.csrf = me.body.csrf;
  session.role = me.body.role;
  session.organisation = me.body.organisation;
  showAdminLinks(session.role);
  // and for whom, once there is more than the default (unnamed) organisation
  const organisation = me.body.organisation && me.body.organisation.name;
  $("#signed-in-as").textContent = organisation ? `${session.email} · ${organisation}` : session.email;
  $("#sign-out").addEventListener("click", signOut);
  return true;
}
