// Staff: create a session and hand out its three links, and watch the list of sessions.
// The session cookie (see staff-session.js) signs the calls in. The list is fetched
// every few seconds; while the live feed (staff-feed.js) is connected, each live room's
// summary replaces its row's people and recording as it changes, on whichever server
// the room lives, and the list is fetched less often.

import { linkItem } from "../lib/clipboard.js";
import { formatDate, recordingLabel } from "../lib/format.js";
import { languageName, onLanguageChange, t } from "../lib/i18n.js";
import { StaffFeed } from "../lib/staff-feed.js";
import { api, apiError, startStaffPage, toSignIn } from "../lib/staff-session.js";
import { $, confirmDialog, el, show, tableHead } from "../lib/ui.js";

// The last created session's links: the server keeps only hashes of their tokens, so
// they live in this tab until it is closed.
const CREATED_KEY = "storyroom.staffCreated";
const REFRESH_MS = 4000;
const REFRESH_LIVE_MS = 30000; // the feed tells of room changes; this finds new sessions
const SEATS = ["a", "b", "facilitator"];

const page = {
  sessions: null,
  created: null, // {response, names}
  refreshTimer: null,
  listError: null,
  feedLive: false,
  live: new Map(), // session id -> its latest summary from the live feed
};

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

function storedCreated() {
  try {
    const created = JSON.parse(sessionStorage.getItem(CREATED_KEY) || "null");
    return created && created.response && created.names ? created : null;
  } catch {
    return null;
  }
}

// -- sessions ------------------------------------------------------------------------

function scheduleRefresh() {
  clearTimeout(page.refreshTimer);
  page.refreshTimer = setTimeout(refresh, page.feedLive ? REFRESH_LIVE_MS : REFRESH_MS);
}

async function refresh() {
  const result = await api("GET", "/api/sessions");
  if (result.status === 200) {
    page.sessions = result.body.sessions;
    page.listError = null;
  } else if (result.status === 401) {
    return; // off to the sign-in page
  } else {
    page.listError = apiError(result);
  }
  renderSessions();
  renderContactChoices();
  scheduleRefresh();
}

/** A row as the list fetched it, with the live feed's newer people and recording. */
function withLive(session) {
  const live = page.feedLive ? page.live.get(session.id) : null;
  if (!live) {
    return session;
  }
  return { ...session, connected: live.connected, recording: live.recording, percent: live.percent };
}

function liveSession(summary) {
  page.live.set(summary.id, summary);
  if (page.sessions && !page.sessions.some((session) => session.id === summary.id)) {
    refresh(); // a session created since the list was fetched
    return;
  }
  renderSessions();
}

function feedLive(live) {
  page.feedLive = live;
  if (!live) {
    page.live.clear(); // stale once the feed stops: the fetched list is the truth again
  }
  renderSessions();
  scheduleRefresh();
}

function renderSessions() {
  const sessions = (page.sessions || []).map(withLive);
  $("#sessions-feed").textContent = t(page.feedLive ? "staff.feed_live" : "staff.feed_polling");
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
              total: session.kind === "self_guided" ? 2 : 3,
              seats: connected.map((seat) => t(`seat.${seat}`)).join(", "),
            });
      return el("tr", { dataset: { session: session.id } }, [
        el("th", { attrs: { scope: "row" } }, [
          el("span", { className: "row-title", text: session.title }),
          session.kind === "self_guided"
            ? el("span", { className: "tag", text: t("staff.kind_tag_self_guided") })
            : null,
          el("span", { className: "row-id", text: session.id }),
        ]),
        el("td", { text: formatDate(session.created_at) }),
        el("td", { text: languageName(session.language) }),
        el("td", { text: people, dataset: { count: String(connected.length) } }),
        el("td", {}, [
          el("span", {
            className: "state-tag",
            text: recordingLabel(session.recording, session.percent),
            dataset: { state: session.recording },
          }),
        ]),
        el(
          "td",
          { className: "reissue-cell" },
          SEATS.filter((seat) => seat !== "facilitator" || session.kind !== "self_guided").map((seat) =>
            el("button", {
              text: t(`seat.${seat}`),
              className: "small",
              attrs: {
                type: "button",
                "aria-label": t("staff.reissue_label", { seat: t(`seat.${seat}`), title: session.title }),
              },
              dataset: { reissue: seat },
              on: { click: () => reissue(session, seat) },
            }),
          ),
        ),
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

/** A new join link for one seat of a session (after confirming): the old link stops
 * working at once; the new one is shown with the copy button. */
async function reissue(session, seat) {
  const ok = await confirmDialog({
    title: t("staff.reissue_title", { seat: t(`seat.${seat}`) }),
    body: t("staff.reissue_body", { title: session.title }),
    confirm: t("staff.reissue_confirm"),
  });
  if (!ok) {
    return;
  }
  const status = $("#sessions-status");
  const result = await api("POST", `/api/sessions/${encodeURIComponent(session.id)}/seats/${seat}/reissue`);
  if (result.status !== 201) {
    status.textContent = apiError(result);
    return;
  }
  status.textContent = t("staff.reissued", { seat: t(`seat.${seat}`), title: session.title });
  page.created = {
    response: { id: session.id, seats: { [seat]: { url: result.body.url } } },
    names: { [seat]: t(`seat.${seat}`) },
    title: session.title,
  };
  store(CREATED_KEY, JSON.stringify(page.created));
  renderLinks();
  $("#links").focus();
}

// -- create ----------------------------------------------------------------------------

function formValue(id) {
  return $(id).value.trim();
}

/** A self-guided session has no facilitator: the form asks for none. */
function renderKind() {
  const guided = $("#f-kind").value === "self_guided";
  show($("#f-facilitator"), !guided);
  $("#f-f-name").required = !guided;
}

async function createSession(event) {
  event.preventDefault();
  const kind = $("#f-kind").value;
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
    kind,
  };
  if (kind !== "self_guided") {
    payload.facilitator = { name: names.facilitator };
  }
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
  renderKind();
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
  const items = SEATS.filter((seat) => response.seats[seat]).map((seat) =>
    linkItem({
      id: `link-${seat}`,
      url: response.seats[seat].url,
      label: [
        el("span", { className: "seat-role", text: t(`seat.${seat}`) }),
        el("span", { text: ` — ${names[seat]}` }),
      ],
      who: names[seat],
      seat,
    }),
  );
  $("#link-list").replaceChildren(...items);
}

// -- where copies go ---------------------------------------------------------------------
// Each participant's email address and language for their copy of the recording: chosen
// per session, entered, changed or removed. Staff-only; matching fills them in from the
// application, and the copy goes by itself once the recording is ready.

const PARTICIPANTS = ["a", "b"];
const contacts = { sessionId: "", names: {}, found: {}, choices: "" };

function renderContactChoices() {
  const select = $("#contacts-session");
  const sessions = (page.sessions || []).slice().sort((x, y) => y.created_at - x.created_at);
  const choices = `${document.documentElement.lang} ${sessions.map((session) => session.id).join(" ")}`;
  if (choices === contacts.choices) {
    return; // rebuilt only when the sessions change, not while someone is choosing
  }
  contacts.choices = choices;
  select.replaceChildren(
    el("option", { text: t("staff.contacts_choose"), attrs: { value: "" } }),
    ...sessions.map((session) =>
      el("option", {
        text: `${session.title} · ${formatDate(session.created_at)}`,
        attrs: { value: session.id },
      }),
    ),
  );
  select.value = sessions.some((session) => session.id === contacts.sessionId) ? contacts.sessionId : "";
}

async function chooseContactSession() {
  contacts.sessionId = $("#contacts-session").value;
  const status = $("#contacts-status");
  contacts.found = {};
  contacts.names = {};
  renderContactForms();
  if (!contacts.sessionId) {
    status.textContent = "";
    return;
  }
  status.textContent = t("staff.contacts_loading");
  const id = encodeURIComponent(contacts.sessionId);
  const [session, found] = await Promise.all([
    api("GET", `/api/sessions/${id}`),
    api("GET", `/api/sessions/${id}/contacts`),
  ]);
  if (session.status !== 200 || found.status !== 200) {
    status.textContent = apiError(session.status !== 200 ? session : found);
    return;
  }
  contacts.names = Object.fromEntries(PARTICIPANTS.map((seat) => [seat, (session.body.seats[seat] || {}).name || ""]));
  contacts.found = found.body.contacts;
  status.textContent = "";
  renderContactForms();
}

function contactWho(seat) {
  return t("staff.contact_who", { seat: t(`seat.${seat}`), name: contacts.names[seat] || "" });
}

function contactForm(seat) {
  const contact = contacts.found[seat];
  const email = el("input", {
    attrs: { type: "email", id: `contact-${seat}-email`, maxlength: "254", autocomplete: "off", required: true },
  });
  email.value = contact ? contact.email : "";
  const language = el(
    "select",
    { attrs: { id: `contact-${seat}-language` } },
    ["en", "es"].map((code) => el("option", { text: languageName(code), attrs: { value: code } })),
  );
  language.value = contact ? contact.language : "en";
  const source = contact
    ? t(contact.source === "application" ? "staff.contact_from_application" : "staff.contact_from_staff", {
        date: formatDate(contact.updated_at),
      })
    : t("staff.contact_none");
  const form = el("form", { className: "contact-form", dataset: { seat } }, [
    el("fieldset", {}, [
      el("legend", { text: contactWho(seat) }),
      el("div", { className: "field" }, [
        el("label", { text: t("staff.contact_email"), attrs: { for: email.id } }),
        email,
      ]),
      el("div", { className: "field" }, [
        el("label", { text: t("staff.contact_language"), attrs: { for: language.id } }),
        language,
      ]),
      el("p", { className: "hint contact-source", text: source }),
      el("div", { className: "button-row" }, [
        el("button", { className: "primary", text: t("staff.contact_save"), attrs: { type: "submit" } }),
        el("button", {
          className: "quiet",
          text: t("staff.contact_remove"),
          attrs: {
            type: "button",
            disabled: !contact,
            "aria-label": t("staff.contact_remove_label", { who: contactWho(seat) }),
          },
          on: { click: () => removeContact(seat) },
        }),
      ]),
    ]),
  ]);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveContact(seat, email.value.trim(), language.value);
  });
  return form;
}

function renderContactForms() {
  const forms = $("#contact-forms");
  forms.replaceChildren(...(contacts.sessionId && contacts.names.a !== undefined ? PARTICIPANTS.map(contactForm) : []));
}

async function saveContact(seat, email, language) {
  const status = $("#contacts-status");
  status.textContent = t("common.saving");
  const path = `/api/sessions/${encodeURIComponent(contacts.sessionId)}/contacts/${seat}`;
  const result = await api("PUT", path, { email, language });
  if (result.status !== 200) {
    const error = result.body && result.body.error;
    status.textContent = error && error.code === "invalid_email" ? t("staff.contact_bad_email") : apiError(result);
    return;
  }
  contacts.found[seat] = result.body.contact;
  renderContactForms();
  status.textContent = t("staff.contact_saved", { who: contactWho(seat) });
}

async function removeContact(seat) {
  const ok = await confirmDialog({
    title: t("staff.contact_remove_title", { who: contactWho(seat) }),
    body: t("staff.contact_remove_body"),
    confirm: t("staff.contact_remove"),
    danger: true,
  });
  if (!ok) {
    return;
  }
  const status = $("#contacts-status");
  const path = `/api/sessions/${encodeURIComponent(contacts.sessionId)}/contacts/${seat}`;
  const result = await api("DELETE", path);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  delete contacts.found[seat];
  renderContactForms();
  status.textContent = t("staff.contact_removed", { who: contactWho(seat) });
}

function startContacts() {
  $("#contacts-session").addEventListener("change", chooseContactSession);
  onLanguageChange(() => {
    renderContactChoices();
    renderContactForms();
  });
}

// -- page ------------------------------------------------------------------------------

function render() {
  renderSessions();
  renderLinks();
}

async function main() {
  tableHead($("#sessions-table"), [
    "staff.col_title",
    "staff.col_created",
    "staff.col_language",
    "staff.col_people",
    "staff.col_recording",
    "staff.col_reissue",
  ]);
  if (!(await startStaffPage("sessions"))) {
    return;
  }
  onLanguageChange(render);
  $("#create-form").addEventListener("submit", createSession);
  $("#f-kind").addEventListener("change", renderKind);
  page.created = storedCreated();
  render();
  startContacts();
  await refresh();
  new StaffFeed({ onSession: liveSession, onLive: feedLive, onSignedOut: toSignIn }).start();
}

main();
