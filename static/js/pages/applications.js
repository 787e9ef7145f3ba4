// Staff: applications (filters, detail, withdraw, delete), matching proposals (accept,
// reject, plan, confirm), the facilitator roster and the outbox. Contact details are
// shown here only, never on participant pages.

import { callApi, fetchBlob, refusal } from "../lib/api.js";
import { availabilityRows, fillTimeZones } from "../lib/availability.js";
import { activationPath, facilitatorItems, languagesText, windowText } from "../lib/facilitators.js";
import { language, onLanguageChange, t } from "../lib/i18n.js";
import { PLACEMENT_KEYS, placementText } from "../lib/placement.js";
import { api, apiError, startStaffPage } from "../lib/staff-session.js";
import { $, $$, confirmDialog, el, show, tableHead } from "../lib/ui.js";

const STATUSES = [
  ["new", "applications.status_new"],
  ["proposed", "applications.status_proposed"],
  ["matched", "applications.status_matched"],
  ["scheduled", "applications.status_scheduled"],
  ["withdrawn", "applications.status_withdrawn"],
];
const PROPOSAL_STATUSES = [
  ["proposed", "applications.proposals_proposed"],
  ["accepted", "applications.proposals_accepted"],
  ["scheduled", "applications.proposals_scheduled"],
  ["rejected", "applications.proposals_rejected"],
  ["cancelled", "applications.proposals_cancelled"],
  ["", "applications.proposals_all"],
];
const NEARNESS = {
  same: "applications.region_same",
  nearby: "applications.region_nearby",
  far: "applications.region_far",
};

const page = {
  applications: [],
  regions: [],
  detail: null,
  proposals: [],
  facilitators: [],
  outbox: [],
  message: null,
  facWindows: null,
};

function label(pairs, value) {
  const found = pairs.find(([v]) => v === value);
  return found ? t(found[1]) : value;
}

function regionName(code) {
  const region = page.regions.find((r) => r.code === code);
  return region ? region.name[language()] || region.name.en : code;
}

function formatDate(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toLocaleString(language(), { dateStyle: "medium", timeStyle: "short" });
}

function formatIn(value, timeZone) {
  try {
    return new Date(value).toLocaleString(language(), {
      dateStyle: "full",
      timeStyle: "short",
      timeZone,
    });
  } catch {
    return formatDate(value);
  }
}

// -- applications ----------------------------------------------------------------------

function fillFilters() {
  const region = $("#filter-region");
  const keepRegion = region.value;
  region.replaceChildren(
    el("option", { text: t("applications.any"), attrs: { value: "" } }),
    ...page.regions.map((r) =>
      el("option", { text: r.name[language()] || r.name.en, attrs: { value: r.code } }),
    ),
  );
  region.value = keepRegion;
  const placement = $("#filter-placement");
  const keepPlacement = placement.value;
  placement.replaceChildren(
    el("option", { text: t("applications.any"), attrs: { value: "" } }),
    ...PLACEMENT_KEYS.map((key, n) =>
      el("option", { text: placementText(n + 1), attrs: { value: String(n + 1) } }),
    ),
  );
  placement.value = keepPlacement;
  const status = $("#filter-status");
  const keepStatus = status.value;
  status.replaceChildren(
    el("option", { text: t("applications.any"), attrs: { value: "" } }),
    ...STATUSES.map(([value, key]) => el("option", { text: t(key), attrs: { value } })),
  );
  status.value = keepStatus;
  const proposals = $("#proposal-status");
  const keepProposals = proposals.value || "proposed";
  proposals.replaceChildren(
    ...PROPOSAL_STATUSES.map(([value, key]) => el("option", { text: t(key), attrs: { value } })),
  );
  proposals.value = keepProposals;
}

async function loadApplications() {
  const query = new URLSearchParams();
  for (const [name, id] of [
    ["region", "#filter-region"],
    ["language", "#filter-language"],
    ["placement", "#filter-placement"],
    ["status", "#filter-status"],
  ]) {
    if ($(id).value) {
      query.set(name, $(id).value);
    }
  }
  const result = await api("GET", `/api/applications?${query}`);
  if (result.status === 200) {
    page.applications = result.body.applications;
    page.listError = null;
  } else {
    page.listError = apiError(result);
  }
  renderApplications();
}

function renderApplications() {
  const rows = page.applications.map((a) =>
    el("tr", { dataset: { application: a.id } }, [
      el("th", { attrs: { scope: "row" } }, [
        el("button", {
          className: "link-button",
          text: `${a.first_name} ${a.last_name}`,
          attrs: { type: "button" },
          on: { click: () => openDetail(a.id) },
        }),
      ]),
      el("td", { text: `${a.city}, ${regionName(a.region)}` }),
      el("td", { text: languagesText(a.speaks) }),
      el("td", { text: placementText(a.placement) }),
      el("td", {}, [
        el("span", {
          className: "state-tag",
          text: label(STATUSES, a.status),
          dataset: { state: a.status },
        }),
      ]),
      el("td", { text: formatDate(a.created_at) }),
    ]),
  );
  $("#applications-body").replaceChildren(...rows);
  const status = $("#applications-status");
  if (page.listError) {
    status.textContent = page.listError;
  } else if (!page.applications.length) {
    status.textContent = t("applications.none");
  } else {
    status.textContent = t("applications.count", { n: page.applications.length });
  }
}

async function openDetail(id) {
  const result = await api("GET", `/api/applications/${encodeURIComponent(id)}`);
  if (result.status !== 200) {
    $("#applications-status").textContent = apiError(result);
    return;
  }
  page.detail = result.body;
  renderDetail();
  $("#detail").focus();
}

function renderDetail() {
  const a = page.detail;
  show($("#detail"), Boolean(a));
  if (!a) {
    return;
  }
  $("#detail-title").textContent = `${a.first_name} ${a.last_name}`;
  const entries = [
    ["applications.col_status", label(STATUSES, a.status)],
    ["apply.email", a.email],
    ["apply.phone", a.phone || "—"],
    ["applications.col_place", `${a.city}, ${regionName(a.region)}`],
    ["apply.time_zone", a.time_zone],
    ["apply.speaks", languagesText(a.speaks)],
    ["applications.email_language", languagesText([a.language])],
    ["apply.placement", placementText(a.placement)],
    ["apply.party", a.party || "—"],
    ["apply.bio", a.bio],
    ["apply.shaped_views", a.shaped_views || "—"],
    ["apply.availability", a.availability.map(windowText).join("; ")],
    ["apply.accessibility", a.accessibility || "—"],
    ["applications.col_received", formatDate(a.created_at)],
  ];
  $("#detail-list").replaceChildren(
    ...entries.flatMap(([key, text]) => [el("dt", { text: t(key) }), el("dd", { text })]),
  );
  $("#detail-history").replaceChildren(
    ...(a.proposals.length
      ? a.proposals.map((p) =>
          el("li", {
            text: t("applications.history_item", {
              partner: p.partner || "—",
              status: label(PROPOSAL_STATUSES, p.status),
              date: formatDate(p.created_at),
            }),
          }),
        )
      : [el("li", { text: t("applications.history_none") })]),
  );
  $("#withdraw").disabled = a.status === "withdrawn";
}

async function withdrawDetail() {
  const a = page.detail;
  const ok = await confirmDialog({
    title: t("applications.withdraw_title", { name: a.first_name }),
    body: t("applications.withdraw_body"),
    confirm: t("applications.withdraw"),
  });
  if (!ok) {
    return;
  }
  const result = await api("POST", `/api/applications/${encodeURIComponent(a.id)}/withdraw`);
  $("#detail-status").textContent =
    result.status === 200 ? t("applications.withdrawn") : apiError(result);
  if (result.status === 200) {
    await openDetail(a.id);
    await Promise.all([loadApplications(), loadProposals()]);
  }
}

async function deleteDetail() {
  const a = page.detail;
  const ok = await confirmDialog({
    title: t("applications.delete_title", { name: a.first_name }),
    body: t("applications.delete_body"),
    confirm: t("applications.delete"),
    danger: true,
  });
  if (!ok) {
    return;
  }
  const result = await api("DELETE", `/api/applications/${encodeURIComponent(a.id)}`);
  if (result.status === 204) {
    page.detail = null;
    renderDetail();
    $("#applications-status").textContent = t("applications.deleted");
    await Promise.all([loadApplications(), loadProposals()]);
    $("#applications").focus();
  } else {
    $("#detail-status").textContent = apiError(result);
  }
}

// -- matching ----------------------------------------------------------------------------

async function runMatching() {
  const status = $("#matching-status");
  status.textContent = t("applications.matching_running");
  $("#run-matching").disabled = true;
  const result = await api("POST", "/api/matching/run");
  $("#run-matching").disabled = false;
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  status.textContent = t("applications.matching_done", {
    pairs: result.body.proposals.length,
    waiting: result.body.waiting,
    unmatched: result.body.unmatched,
  });
  $("#proposal-status").value = "proposed";
  await Promise.all([loadProposals(), loadApplications()]);
}

async function loadProposals() {
  const wanted = $("#proposal-status").value;
  const query = wanted ? `?status=${encodeURIComponent(wanted)}` : "";
  const result = await api("GET", `/api/proposals${query}`);
  if (result.status === 200) {
    page.proposals = result.body.proposals;
    renderProposals();
  } else {
    $("#matching-status").textContent = apiError(result);
  }
}

function personLine(person) {
  return t("applications.person_line", {
    name: person.first_name,
    place: `${person.city}, ${regionName(person.region)}`,
    placement: placementText(person.placement),
    languages: languagesText(person.speaks),
  });
}

function slotText(person) {
  if (!person.slot) {
    return "";
  }
  return t("applications.slot_for", {
    name: person.first_name,
    slot: windowText(person.slot),
    zone: person.slot.time_zone,
  });
}

function proposalCard(p) {
  const names = p.people.map((person) => person.first_name).join(" & ");
  const ex = p.explanation;
  const why = [
    t(NEARNESS[ex.region] || "applications.region_far"),
    t("applications.why_languages", { languages: languagesText(ex.languages) }),
    t("applications.why_gap", { gap: ex.placement_gap }),
    t("applications.why_slot", { minutes: ex.slot.minutes }),
    ...p.people.map(slotText),
  ];
  const actions = [];
  const status = el("p", { className: "status", attrs: { role: "status" } });
  const act = (key, handler, className = "") =>
    el("button", {
      text: t(key),
      className,
      attrs: { type: "button" },
      on: { click: () => handler(status) },
    });
  if (p.status === "proposed") {
    actions.push(act("applications.accept", (s) => decide(p, "accept", s), "primary"));
    actions.push(act("applications.reject", (s) => decide(p, "reject", s)));
  }
  const schedule = p.schedule;
  let planBlock = null;
  if (p.status === "accepted") {
    const selectId = `fac-for-${p.id}`;
    const select = el(
      "select",
      { attrs: { id: selectId } },
      [
        el("option", { text: t("applications.any_facilitator"), attrs: { value: "" } }),
        ...page.facilitators
          .filter((f) => f.active)
          .map((f) => el("option", { text: f.first_name, attrs: { value: f.id } })),
      ],
    );
    if (schedule && schedule.facilitator) {
      select.value = schedule.facilitator.id;
    }
    planBlock = el("div", { className: "plan" }, [
      el("div", { className: "field narrow-field" }, [
        el("label", { text: t("applications.facilitator"), attrs: { for: selectId } }),
        select,
      ]),
    ]);
    actions.push(
      act(schedule ? "applications.plan_again" : "applications.plan", (s) =>
        planSession(p, select.value, s),
      ),
    );
    if (schedule) {
      actions.push(
        act("applications.confirm", (s) => confirmSession(p, schedule, s), "primary"),
      );
    }
  }
  const scheduleLines = [];
  if (schedule) {
    scheduleLines.push(
      t(schedule.status === "confirmed" ? "applications.confirmed_at" : "applications.planned_at", {
        when: formatDate(schedule.starts_at),
        facilitator: schedule.facilitator ? schedule.facilitator.first_name : "—",
      }),
    );
    if (schedule.facilitator) {
      scheduleLines.push(
        t("applications.their_time", {
          name: schedule.facilitator.first_name,
          when: formatIn(schedule.starts_at, schedule.facilitator.time_zone),
        }),
      );
    }
    if (schedule.session_id) {
      scheduleLines.push(t("applications.session_created", { id: schedule.session_id }));
      scheduleLines.push(
        t("applications.invitations_sent", {
          n: schedule.invitations.length,
          via: schedule.invitations.map((i) => i.via).join(", "),
        }),
      );
    }
  }
  return el("li", { className: "proposal", dataset: { proposal: p.id, status: p.status } }, [
    el("h3", {}, [
      el("span", { text: names }),
      el("span", {
        className: "state-tag",
        text: label(PROPOSAL_STATUSES, p.status),
        dataset: { state: p.status },
      }),
    ]),
    el("ul", { className: "plain-list" }, p.people.map((person) => el("li", { text: personLine(person) }))),
    el("ul", { className: "why" }, why.filter(Boolean).map((text) => el("li", { text }))),
    ...scheduleLines.map((text) => el("p", { className: "schedule-line", text })),
    planBlock,
    el("div", { className: "actions" }, actions),
    status,
  ]);
}

function renderProposals() {
  const items = page.proposals.map(proposalCard);
  if (!items.length) {
    items.push(el("li", { className: "hint", text: t("applications.no_proposals") }));
  }
  $("#proposals").replaceChildren(...items);
}

async function decide(p, how, status) {
  status.textContent = t("common.saving");
  const result = await api("POST", `/api/proposals/${encodeURIComponent(p.id)}/${how}`);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  $("#matching-status").textContent = t(
    how === "accept" ? "applications.accepted" : "applications.rejected",
    { names: p.people.map((person) => person.first_name).join(" & ") },
  );
  if (how === "accept") {
    $("#proposal-status").value = "accepted";
  }
  await Promise.all([loadProposals(), loadApplications()]);
}

async function planSession(p, facilitatorId, status) {
  status.textContent = t("common.saving");
  const body = facilitatorId ? { facilitator_id: facilitatorId } : {};
  const result = await api("POST", `/api/proposals/${encodeURIComponent(p.id)}/schedule`, body);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  await loadProposals();
  const card = $(`[data-proposal="${p.id}"]`);
  if (card) {
    $(".status", card).textContent = t("applications.planned");
  }
}

async function confirmSession(p, schedule, status) {
  const ok = await confirmDialog({
    title: t("applications.confirm_title"),
    body: t("applications.confirm_body", { when: formatDate(schedule.starts_at) }),
    confirm: t("applications.confirm"),
  });
  if (!ok) {
    return;
  }
  status.textContent = t("common.saving");
  const result = await api("POST", `/api/schedules/${encodeURIComponent(schedule.id)}/confirm`);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  $("#matching-status").textContent = t("applications.sent", {
    names: p.people.map((person) => person.first_name).join(" & "),
  });
  $("#proposal-status").value = "scheduled";
  await Promise.all([loadProposals(), loadApplications(), loadOutbox()]);
}

// -- facilitators --------------------------------------------------------------------------

async function loadFacilitators() {
  const result = await api("GET", "/api/facilitators");
  if (result.status === 200) {
    page.facilitators = result.body.facilitators;
    renderFacilitators();
  }
}

function renderFacilitators() {
  $("#facilitator-list").replaceChildren(...facilitatorItems(page.facilitators, setActive));
}

async function setActive(f, active) {
  const result = await api("POST", activationPath(f, active));
  if (result.status === 200) {
    await loadFacilitators();
    renderProposals();
  } else {
    $("#facilitator-status").textContent = apiError(result);
  }
}

async function addFacilitator(event) {
  event.preventDefault();
  const body = {
    first_name: $("#fac-first_name").value.trim(),
    email: $("#fac-email").value.trim(),
    language: $("#fac-language").value,
    speaks: $$("#facilitator-form input[type=checkbox]:checked").map((box) => box.value),
    time_zone: $("#fac-time_zone").value,
    availability: page.facWindows.read(),
  };
  const status = $("#facilitator-status");
  status.textContent = t("common.saving");
  const result = await api("POST", "/api/facilitators", body);
  if (result.status !== 201) {
    const error = refusal(result);
    const fields = error && error.fields;
    status.textContent = fields
      ? t("applications.facilitator_invalid", { fields: Object.keys(fields).join(", ") })
      : apiError(result);
    return;
  }
  status.textContent = t("applications.facilitator_added", { name: body.first_name });
  $("#fac-first_name").value = "";
  $("#fac-email").value = "";
  page.facWindows.clear();
  page.facWindows.add();
  await loadFacilitators();
  renderProposals();
}

// -- outbox ------------------------------------------------------------------------------

async function loadOutbox() {
  const result = await api("GET", "/api/outbox");
  const status = $("#outbox-status");
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  page.outbox = result.body.messages;
  page.via = result.body.via;
  renderOutbox();
}

function renderOutbox() {
  const status = $("#outbox-status");
  if (page.via === "smtp") {
    status.textContent = t("applications.outbox_smtp");
  } else {
    status.textContent = page.outbox.length
      ? t("applications.outbox_count", { n: page.outbox.length })
      : t("applications.outbox_empty");
  }
  $("#outbox-list").replaceChildren(
    ...page.outbox.map((m) =>
      el("li", { className: "outbox-item", dataset: { message: m.name } }, [
        el("button", {
          className: "link-button",
          text: m.subject,
          attrs: { type: "button" },
          on: { click: () => openMessage(m.name) },
        }),
        el("span", { className: "hint", text: ` — ${m.to} · ${m.date}` }),
      ]),
    ),
  );
}

async function openMessage(name) {
  const result = await api("GET", `/api/outbox/${encodeURIComponent(name)}`);
  if (result.status !== 200) {
    $("#outbox-status").textContent = apiError(result);
    return;
  }
  page.message = result.body;
  renderMessage();
  $("#message").focus();
}

function renderMessage() {
  const m = page.message;
  show($("#message"), Boolean(m));
  if (!m) {
    return;
  }
  $("#message-subject").textContent = m.subject;
  $("#message-headers").replaceChildren(
    ...[
      ["applications.mail_from", m.from],
      ["applications.mail_to", m.to],
      ["applications.mail_date", m.date],
    ].flatMap(([key, text]) => [el("dt", { text: t(key) }), el("dd", { text })]),
  );
  $("#message-text").textContent = m.text;
  $("#message-attachments").replaceChildren(
    ...m.attachments.map((a) =>
      el("li", {
        text: t("applications.attachment", { name: a.filename, type: a.content_type, bytes: a.bytes }),
      }),
    ),
  );
}

async function downloadMessage() {
  const m = page.message;
  const blob = await fetchBlob(`/api/outbox/${encodeURIComponent(m.name)}/raw`);
  if (!blob) {
    $("#outbox-status").textContent = t("staff.error_network");
    return;
  }
  const url = URL.createObjectURL(blob);
  const link = el("a", { attrs: { href: url, download: m.name } });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// -- page ----------------------------------------------------------------------------------

function render() {
  fillFilters();
  fillTimeZones($("#fac-time_zone"));
  page.facWindows.render();
  renderApplications();
  renderDetail();
  renderProposals();
  renderFacilitators();
  renderOutbox();
  renderMessage();
}

async function loadRegions() {
  const result = await callApi("GET", "/api/regions");
  page.regions = result.status === 200 ? result.body.regions : [];
  page.regions.sort((x, y) => x.name.en.localeCompare(y.name.en));
}

async function main() {
  tableHead($("#applications-table"), [
    "applications.col_name",
    "applications.col_place",
    "applications.col_languages",
    "applications.col_placement",
    "applications.col_status",
    "applications.col_received",
  ]);
  page.facWindows = availabilityRows($("#fac-windows"), "fw");
  page.facWindows.add();
  const [started] = await Promise.all([startStaffPage("applications"), loadRegions()]);
  if (!started) {
    return;
  }
  onLanguageChange(render);
  render();
  $("#filters").addEventListener("change", loadApplications);
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#close-detail").addEventListener("click", () => {
    page.detail = null;
    renderDetail();
    $("#applications").focus();
  });
  $("#withdraw").addEventListener("click", withdrawDetail);
  $("#delete").addEventListener("click", deleteDetail);
  $("#run-matching").addEventListener("click", runMatching);
  $("#proposal-status").addEventListener("change", loadProposals);
  $("#facilitator-form").addEventListener("submit", addFacilitator);
  $("#fac-add-window").addEventListener("click", () => {
    page.facWindows.add().querySelector("select").focus();
  });
  $("#message-download").addEventListener("click", downloadMessage);
  await Promise.all([loadApplications(), loadProposals(), loadFacilitators(), loadOutbox()]);
  document.body.dataset.ready = "true";
}

main();
