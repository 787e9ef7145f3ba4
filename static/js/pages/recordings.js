// Staff: find recordings by words, words said (the transcripts), first names, keywords, language, status, consent and
// date. The filters live in the page's query string, so a search can be bookmarked.

import { formatClock, formatDate, recordingLabel } from "../lib/format.js";
import { onLanguageChange, t } from "../lib/i18n.js";
import { api, apiError, startStaffPage } from "../lib/staff-session.js";
import { $, el, tableHead } from "../lib/ui.js";

const FIELDS = {
  q: "#q",
  said: "#f-said",
  name: "#f-name",
  keyword: "#f-keyword",
  language: "#f-language",
  status: "#f-status",
  consent: "#f-consent",
  from: "#f-from",
  to: "#f-to",
};
const STATUSES = ["ready", "finalizing", "failed", "recording", "paused", "stopped", "interrupted"];
const CONSENT_KEYS = {
  archive: "archive.consent_archive",
  public: "archive.consent_public",
  copies: "archive.consent_copies",
};

const page = { recordings: null, error: null, refreshTimer: null, query: null };
// While a listed recording is being made or its files prepared, the list asks again.
const REFRESH_MS = 3000;
const MOVING = ["recording", "paused", "finalizing"];

function filtersFromForm() {
  const query = new URLSearchParams();
  for (const [name, selector] of Object.entries(FIELDS)) {
    const value = $(selector).value.trim();
    if (value) {
      query.set(name, value);
    }
  }
  return query;
}

function formFromQuery(query) {
  for (const [name, selector] of Object.entries(FIELDS)) {
    $(selector).value = query.get(name) || "";
  }
}

async function search({ quiet = false } = {}) {
  clearTimeout(page.refreshTimer);
  // a refresh repeats the last search, whatever is being typed in the form meanwhile
  const query = quiet && page.query ? page.query : filtersFromForm();
  page.query = query;
  const text = query.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
  if (!quiet) {
    $("#results-status").textContent = t("archive.searching");
  }
  const result = await api("GET", `/api/recordings${text ? `?${text}` : ""}`);
  if (result.status === 200) {
    page.recordings = result.body.recordings;
    page.error = null;
  } else {
    page.recordings = [];
    page.error = apiError(result);
  }
  render();
  if (page.recordings.some((recording) => MOVING.includes(recording.status))) {
    page.refreshTimer = setTimeout(() => search({ quiet: true }), REFRESH_MS);
  }
}

function people(recording) {
  const names = recording.people || {};
  return ["a", "b", "facilitator"]
    .filter((seat) => names[seat])
    .map((seat) => (seat === "facilitator" ? t("archive.facilitated_by", { name: names[seat] }) : names[seat]))
    .join(", ");
}

function consentTags(recording) {
  const consent = recording.consent || {};
  return Object.entries(CONSENT_KEYS)
    .filter(([kind]) => consent[kind])
    .map(([kind, key]) => el("span", { className: "tag", text: t(key), dataset: { consent: kind } }));
}

function render() {
  const rows = (page.recordings || []).map((recording) =>
    el("tr", { dataset: { recording: recording.id } }, [
      el("th", { attrs: { scope: "row" } }, [
        el("a", { text: recording.title || recording.id, attrs: { href: `/staff/recordings/${recording.id}` } }),
        el("span", { className: "row-id", text: recording.id }),
      ]),
      el("td", { text: formatDate(recording.started_at) }),
      el("td", { text: people(recording) }),
      el("td", { text: recording.duration_s ? formatClock(recording.duration_s) : "" }),
      el("td", {}, [
        el("span", {
          className: "state-tag",
          text: recordingLabel(recording.status, recording.percent),
          dataset: { state: recording.status },
        }),
      ]),
      el("td", {}, consentTags(recording)),
    ]),
  );
  $("#results-body").replaceChildren(...rows);
  const count = (page.recordings || []).length;
  let status = page.error;
  if (!status) {
    status =
      count === 0
        ? t("archive.no_results")
        : count === 1
          ? t("archive.results_one")
          : t("archive.results_other", { n: count });
  }
  $("#results-status").textContent = status;
}

async function main() {
  tableHead($("#results"), [
    "archive.col_title",
    "archive.col_recorded",
    "archive.col_people",
    "archive.col_length",
    "archive.col_status",
    "archive.col_consent",
  ]);
  $("#f-status").append(
    ...STATUSES.map((value) => el("option", { i18n: `rec.${value}`, attrs: { value } })),
  );
  $("#f-consent").append(
    ...Object.entries(CONSENT_KEYS).map(([value, key]) => el("option", { i18n: key, attrs: { value } })),
  );
  if (!(await startStaffPage("recordings"))) {
    return;
  }
  onLanguageChange(() => {
    if (page.recordings) {
      render();
    }
  });
  formFromQuery(new URLSearchParams(location.search));
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("#clear").addEventListener("click", () => {
    $("#search-form").reset();
    search();
    $("#q").focus();
  });
  await search();
}

main();
