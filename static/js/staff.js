// Staff pages (for now): sign in with the staff token, create a session and hand out
// its three links, and watch the list of sessions.

import {
  bindLanguageSelect,
  browserLanguage,
  chosenLanguage,
  onLanguageChange,
  rememberLanguage,
  setLanguage,
  t,
} from "./i18n.js";
import { $, el, show } from "./ui.js";

const TOKEN_KEY = "storyroom.staffToken";
// The last created session's links: the server keeps only hashes of their tokens, so
// they live with the staff token in this tab until sign-out.
const CREATED_KEY = "storyroom.staffCreated";
const REFRESH_MS = 4000;
const SEATS = ["a", "b", "facilitator"];

const page = {
  token: null,
  sessions: null,
  created: null, // {response, names}
  refreshTimer: null,
  listError: null,
};

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function store(key, value) {
  try {
    if (value) {
      sessionStorage.setItem(key, value);
    } else {
      sessionStorage.removeItem(key);
    }
  } catch {
    // without storage the value lasts as long as this page
  }
}

function storeToken(token) {
  store(TOKEN_KEY, token);
}

function storedCreated() {
  try {
    const created = JSON.parse(sessionStorage.getItem(CREATED_KEY) || "null");
    return created && created.response && created.names ? created : null;
  } catch {
    return null;
  }
}

/** Call the staff API; resolves to {status, body} and never throws. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${page.token}` };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    return { status: response.status, body: json };
  } catch {
    return { status: 0, body: null };
  }
}

function apiError(result) {
  if (result.status === 0) {
    return t("staff.error_network");
  }
  if (result.status === 401) {
    return t("staff.error_token");
  }
  const error = result.body && result.body.error;
  return error && error.message ? error.message : t("error.generic");
}

// -- sign in -------------------------------------------------------------------------

async function signIn(token) {
  page.token = token;
  const result = await api("GET", "/api/sessions");
  if (result.status === 200) {
    storeToken(token);
    page.sessions = result.body.sessions;
    page.listError = null;
    render();
    scheduleRefresh();
    return true;
  }
  page.token = null;
  storeToken(null);
  $("#sign-in-status").textContent = apiError(result);
  render();
  return false;
}

function signOut() {
  page.token = null;
  page.sessions = null;
  page.created = null;
  storeToken(null);
  store(CREATED_KEY, null);
  clearTimeout(page.refreshTimer);
  $("#staff-token").value = "";
  render();
  $("#staff-token").focus();
}

// -- sessions ------------------------------------------------------------------------

function scheduleRefresh() {
  clearTimeout(page.refreshTimer);
  page.refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function refresh() {
  if (!page.token) {
    return;
  }
  const result = await api("GET", "/api/sessions");
  if (result.status === 200) {
    page.sessions = result.body.sessions;
    page.listError = null;
  } else if (result.status === 401) {
    signOut();
    $("#sign-in-status").textContent = t("staff.error_token");
    return;
  } else {
    page.listError = apiError(result);
  }
  renderSessions();
  scheduleRefresh();
}

function formatDate(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleString(document.documentElement.lang, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

function recordingLabel(state) {
  const key = `rec.${state}`;
  const text = t(key);
  return text === key ? state : text;
}

function renderSessions() {
  const sessions = page.sessions || [];
  const rows = sessions
    .slice()
    .sort((x, y) => y.created_at - x.created_at)
    .map((session) => {
      const connected = session.connected || [];
      const people =
        connected.length === 0
          ? t("staff.nobody")
          : t("staff.connected", {
              n: connected.length,
              seats: connected.map((seat) => t(`seat.${seat}`)).join(", "),
            });
      return el("tr", { dataset: { session: session.id } }, [
        el("th", { attrs: { scope: "row" } }, [
          el("span", { className: "row-title", text: session.title }),
          el("span", { className: "row-id", text: session.id }),
        ]),
        el("td", { text: formatDate(session.created_at) }),
        el("td", { text: session.language === "es" ? "Español" : "English" }),
        el("td", { text: people, dataset: { count: String(connected.length) } }),
        el("td", {}, [
          el("span", {
            className: "state-tag",
            text: recordingLabel(session.recording),
            dataset: { state: session.recording },
          }),
        ]),
      ]);
    });
  $("#sessions-body").replaceChildren(...rows);
  const status = $("#sessions-status");
  if (page.listError) {
    status.textContent = page.listError;
  } else if (sessions.length === 0) {
    status.textContent = t("staff.no_sessions");
  } else {
    const key = sessions.length === 1 ? "staff.sessions_count_one" : "staff.sessions_count_other";
    status.textContent = t(key, { n: sessions.length });
  }
}

// -- create ----------------------------------------------------------------------------

function formValue(id) {
  return $(id).value.trim();
}

async function createSession(event) {
  event.preventDefault();
  const names = {
    a: formValue("#f-a-name"),
    b: formValue("#f-b-name"),
    facilitator: formValue("#f-f-name"),
  };
  const payload = {
    title: formValue("#f-title"),
    language: $("#f-language").value,
    target_minutes: Number.parseInt($("#f-minutes").value, 10),
    participants: [
      { name: names.a, bio: formValue("#f-a-bio") },
      { name: names.b, bio: formValue("#f-b-bio") },
    ],
    facilitator: { name: names.facilitator },
  };
  const status = $("#create-status");
  status.textContent = t("common.saving");
  const result = await api("POST", "/api/sessions", payload);
  if (result.status !== 201) {
    status.textContent = apiError(result);
    return;
  }
  status.textContent = t("staff.created", { title: payload.title });
  page.created = { response: result.body, names, title: payload.title };
  store(CREATED_KEY, JSON.stringify(page.created));
  $("#create-form").reset();
  renderLinks();
  const links = $("#links");
  links.focus();
  refresh();
}

function renderLinks() {
  const links = $("#links");
  show(links, Boolean(page.created));
  if (!page.created) {
    return;
  }
  const { response, names } = page.created;
  const items = SEATS.map((seat) => {
    const url = response.seats[seat].url;
    const inputId = `link-${seat}`;
    const status = el("span", { className: "copy-status", attrs: { role: "status" } });
    const input = el("input", {
      attrs: { type: "text", id: inputId, readonly: true, value: url },
      className: "link-input",
      on: { focus: () => input.select() },
    });
    const button = el("button", {
      text: t("staff.copy"),
      attrs: { type: "button", "aria-label": t("staff.copy_label", { who: names[seat] }) },
      on: { click: () => copyLink(input, status) },
    });
    return el("li", { className: "link-item", dataset: { seat } }, [
      el("label", { attrs: { for: inputId } }, [
        el("span", { className: "seat-role", text: t(`seat.${seat}`) }),
        el("span", { text: ` — ${names[seat]}` }),
      ]),
      el("div", { className: "link-row" }, [input, button]),
      status,
    ]);
  });
  $("#link-list").replaceChildren(...items);
}

async function copyLink(input, status) {
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

// -- page ------------------------------------------------------------------------------

function render() {
  const signedIn = Boolean(page.token);
  show($("#sign-in"), !signedIn);
  show($("#signed-in"), signedIn);
  show($("#sign-out"), signedIn);
  if (signedIn) {
    renderSessions();
    renderLinks();
  }
}

async function main() {
  await setLanguage(chosenLanguage("staff") || browserLanguage());
  bindLanguageSelect($("#lang-select"), async (lang) => {
    rememberLanguage("staff", lang);
    await setLanguage(lang);
  });
  onLanguageChange(render);
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#sign-in-status").textContent = t("staff.signing_in");
    const ok = await signIn($("#staff-token").value.trim());
    if (ok) {
      $("#sign-in-status").textContent = "";
      $("#f-title").focus();
    }
  });
  $("#sign-out").addEventListener("click", signOut);
  $("#create-form").addEventListener("submit", createSession);
  const token = storedToken();
  if (token && (await signIn(token))) {
    page.created = storedCreated();
  }
  render();
}

main();
