// Staff: one recording. Listen by chapter (the waveform shows the cues) and along the
// transcript (click a line to play from there, search it, correct a turn), edit the
// catalogue fields, read and record consent, hand out copy links, download every file,
// export a BagIt bag, delete.

import { linkItem } from "../lib/clipboard.js";
import { buildPlayer } from "../lib/player.js";
import { formatBytes, formatClock, formatDate, recordingLabel } from "../lib/format.js";
import { languageName, onLanguageChange, t } from "../lib/i18n.js";
import { api, apiError, apiFile, startStaffPage } from "../lib/staff-session.js";
import { transcriptStatusText } from "../lib/transcript.js";
import { $, confirmDialog, el, tableHead } from "../lib/ui.js";

const RECORDING_ID = decodeURIComponent(location.pathname.split("/").pop() || "");
const PARTICIPANTS = ["a", "b"];
const KINDS = ["archive", "public", "copies"];
const CONSENT_KEYS = {
  archive: "archive.consent_archive",
  public: "archive.consent_public",
  copies: "archive.consent_copies",
};
const SOURCE_KEYS = {
  room: "archive.source_room",
  staff: "archive.source_staff",
  "copy link": "archive.source_copy_link",
};
const LINK_STATE_KEYS = {
  active: "archive.link_active",
  expired: "archive.link_expired",
  revoked: "archive.link_revoked",
};
const KIND_KEYS = {
  master: "archive.kind_master",
  stem: "archive.kind_stem",
  access: "archive.kind_access",
  chapters: "archive.kind_chapters",
  metadata: "archive.kind_metadata",
  manifest: "archive.kind_manifest",
  waveform: "archive.kind_waveform",
  source: "archive.kind_source",
  transcript: "archive.kind_transcript",
};

const page = {
  rec: null,
  newLinks: null,
  player: null,
  playerFor: null,
  clipUrl: null,
  refreshTimer: null,
  transcript: null,
  turn: -1,
  editing: -1,
};
// While a recording is still being made or its files prepared, the page asks again this
// often and follows it by itself.
const REFRESH_MS = 2000;
const SETTLED = ["ready", "failed", "stopped", "interrupted"];

function yesNo(value) {
  return value ? t("common.yes") : t("common.no");
}

function personName(seat) {
  const name = (page.rec.people || {})[seat] || "";
  return t("archive.person", { name, seat: t(`seat.${seat}`) });
}

// -- loading -----------------------------------------------------------------------------

async function load() {
  const result = await api("GET", `/api/recordings/${encodeURIComponent(RECORDING_ID)}`);
  if (result.status !== 200) {
    $("#load-status").textContent = result.status === 404 ? t("archive.not_found") : apiError(result);
    $("#recording").hidden = true;
    return false;
  }
  page.rec = result.body;
  $("#load-status").textContent = "";
  $("#recording").hidden = false;
  render();
  followStatus();
  return true;
}

/** Until the recording settles: the status tag follows the percentage, and the whole
 * page is drawn again once the status itself changes (the files appear when ready). */
function followStatus() {
  clearTimeout(page.refreshTimer);
  if (!page.rec || SETTLED.includes(page.rec.status)) {
    return;
  }
  page.refreshTimer = setTimeout(async () => {
    const result = await api("GET", `/api/recordings/${encodeURIComponent(RECORDING_ID)}`);
    if (result.status === 200) {
      if (result.body.status !== page.rec.status) {
        page.rec = result.body;
        render();
      } else {
        page.rec.percent = result.body.percent;
        renderState();
      }
    }
    followStatus();
  }, REFRESH_MS);
}

function renderState() {
  const state = $("#rec-state");
  state.textContent = recordingLabel(page.rec.status, page.rec.percent);
  state.dataset.state = page.rec.status;
}

function render() {
  const rec = page.rec;
  if (!rec) {
    return;
  }
  document.title = `${rec.title || rec.id} · storyroom`;
  $("#rec-title").textContent = rec.title || rec.id;
  const names = rec.people || {};
  const parts = [
    rec.kind === "self_guided"
      ? t("archive.summary_people_self_guided", { a: names.a || "", b: names.b || "" })
      : t("archive.summary_people", { a: names.a || "", b: names.b || "", facilitator: names.facilitator || "" }),
    languageName(rec.language),
    t("archive.summary_recorded", { date: formatDate(rec.started_at) }),
  ];
  if (rec.duration_s) {
    parts.push(formatClock(rec.duration_s));
  }
  $("#rec-summary").textContent = parts.join(" · ");
  renderState();
  renderPlayer();
  renderTranscript();
  renderMetadata();
  renderConsent();
  renderCopies();
  renderMailAndClips();
  renderFiles();
  renderExports();
}

// -- player and chapters ------------------------------------------------------------------
// The shared player (lib/player.js): the waveform drawn from its levels, numbered marks
// at the questions, previous/next question, the chapters list.

function accessFile() {
  return (page.rec.files || []).find((file) => file.kind === "access");
}

function renderPlayer() {
  const rec = page.rec;
  const access = accessFile();
  $("#player-block").hidden = !access;
  if (!access) {
    return;
  }
  const key = `${access.url} ${document.documentElement.lang}`;
  const playing = page.player && !page.player.audio.paused;
  if (page.playerFor === key || playing) {
    return; // drawn for this file and language (and never stopped mid-play)
  }
  page.playerFor = key;
  page.player = buildPlayer($("#player-root"), {
    src: access.url,
    chapters: rec.chapters || [],
    duration: rec.duration_s || 0,
    waveformUrl: rec.levels_url,
    label: t("archive.listen"),
    marks: true,
    steps: true,
    ids: { audio: "player", chapters: "chapters" },
  });
  // the transcript's line being played follows the (new) player
  page.player.audio.addEventListener("timeupdate", updateTurn);
  page.player.audio.addEventListener("seeked", updateTurn);
  page.turn = -2;
  updateTurn();
}

// -- transcript ------------------------------------------------------------------------------

function transcriptUrl() {
  return `/api/recordings/${encodeURIComponent(RECORDING_ID)}/transcript`;
}

async function loadTranscript() {
  const result = await api("GET", transcriptUrl());
  if (result.status !== 200) {
    $("#transcript-status").textContent = apiError(result);
    return;
  }
  page.transcript = result.body;
  renderTranscript();
}

function turns() {
  return (page.transcript && page.transcript.transcript && page.transcript.transcript.turns) || [];
}

function normalised(text) {
  return text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
}

function turnMatches(turn, words) {
  const text = normalised(turn.text);
  return words.every((word) => text.includes(word));
}

function seekTo(seconds) {
  if (!page.player) {
    return;
  }
  const player = page.player.audio;
  player.currentTime = Math.max(0, seconds);
  player.play().catch(() => {});
  updateTurn();
}

function renderTranscript() {
  const body = page.transcript;
  const transcript = body && body.transcript;
  $("#transcript-status").textContent = body ? transcriptStatusText(body.status) : "";
  $("#transcript-notice").textContent = transcript
    ? t(turns().some((turn) => turn.corrected) ? "transcript.notice_corrected" : "transcript.notice")
    : "";
  $("#transcript-search-field").hidden = !transcript;
  const words = normalised($("#transcript-search").value.trim()).split(/\s+/).filter(Boolean);
  let matches = 0;
  const items = turns().map((turn, index) => {
    const speaker = t("transcript.turn_speaker", { name: turn.name, seat: t(`seat.${turn.seat}`) });
    const hit = words.length > 0 && turnMatches(turn, words);
    matches += hit ? 1 : 0;
    const line = el(
      "button",
      {
        className: "link-button transcript-line",
        attrs: {
          type: "button",
          "aria-label": t("transcript.play_from", { time: formatClock(turn.start), name: speaker }),
        },
        on: { click: () => seekTo(turn.start) },
      },
      [
        el("span", { className: "transcript-time", text: formatClock(turn.start) }),
        el("span", { className: "transcript-speaker", text: speaker }),
        el("span", { className: "transcript-text", text: turn.text }),
      ],
    );
    const children = [line];
    if (turn.corrected) {
      children.push(
        el("p", {
          className: "hint",
          text: t("transcript.corrected", { by: turn.corrected.by, date: formatDate(turn.corrected.at) }),
        }),
      );
    }
    children.push(...(page.editing === index ? [correctionForm(turn, speaker)] : [editButton(index)]));
    return el("li", { className: hit ? "transcript-turn match" : "transcript-turn", dataset: { turn: String(index) } }, children);
  });
  $("#transcript-turns").replaceChildren(...items);
  $("#transcript-matches").textContent = !words.length
    ? ""
    : matches === 0
      ? t("transcript.matches_none")
      : matches === 1
        ? t("transcript.matches_one")
        : t("transcript.matches_other", { n: matches });
  page.turn = -2;
  updateTurn();
}

function editButton(index) {
  return el("button", {
    className: "quiet small",
    text: t("transcript.edit"),
    attrs: { type: "button" },
    on: {
      click: () => {
        page.editing = index;
        renderTranscript();
        const area = $("#transcript-edit");
        if (area) {
          area.focus();
        }
      },
    },
  });
}

function correctionForm(turn, speaker) {
  const area = el("textarea", {
    attrs: {
      id: "transcript-edit",
      rows: "3",
      maxlength: "10000",
      "aria-label": t("transcript.edit_label", { name: speaker, time: formatClock(turn.start) }),
    },
  });
  area.value = turn.text;
  const status = el("p", { className: "status", attrs: { role: "status" } });
  const form = el("form", { className: "transcript-edit" }, [
    area,
    el("div", { className: "button-row" }, [
      el("button", { className: "primary small", text: t("transcript.save"), attrs: { type: "submit" } }),
      el("button", {
        className: "quiet small",
        text: t("transcript.cancel"),
        attrs: { type: "button" },
        on: {
          click: () => {
            page.editing = -1;
            renderTranscript();
          },
        },
      }),
    ]),
    status,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api("PUT", `${transcriptUrl()}/turns/${turn.index}`, { text: area.value });
    if (result.status !== 200) {
      status.textContent = apiError(result);
      return;
    }
    page.transcript = { ...page.transcript, transcript: result.body.transcript };
    page.editing = -1;
    renderTranscript();
    $("#transcript-status").textContent = t("transcript.saved");
  });
  return form;
}

function currentTurn(time) {
  let current = -1;
  turns().forEach((turn, index) => {
    if (time + 0.05 >= turn.start) {
      current = index;
    }
  });
  return current;
}

function updateTurn() {
  if (!page.player) {
    return; // no access copy yet: nothing plays
  }
  const index = currentTurn(page.player.audio.currentTime || 0);
  if (index === page.turn) {
    return;
  }
  page.turn = index;
  for (const item of $("#transcript-turns").children) {
    if (Number(item.dataset.turn) === index) {
      item.setAttribute("aria-current", "true");
    } else {
      item.removeAttribute("aria-current");
    }
  }
}

// -- metadata --------------------------------------------------------------------------------

function renderMetadata() {
  const meta = page.rec.metadata || {};
  const form = $("#meta-form");
  if (form.dataset.loaded === page.rec.id) {
    return; // keep what staff are typing
  }
  form.dataset.loaded = page.rec.id;
  $("#m-title").value = meta.title || "";
  $("#m-description").value = meta.description || "";
  $("#m-keywords").value = (meta.keywords || []).join(", ");
  $("#m-location").value = meta.location || "";
}

async function saveMetadata(event) {
  event.preventDefault();
  const status = $("#meta-status");
  status.textContent = t("common.saving");
  const keywords = $("#m-keywords")
    .value.split(",")
    .map((word) => word.trim())
    .filter(Boolean);
  const result = await api("PATCH", `/api/recordings/${RECORDING_ID}/metadata`, {
    title: $("#m-title").value.trim(),
    description: $("#m-description").value.trim(),
    keywords,
    location: $("#m-location").value.trim(),
  });
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  page.rec.metadata = result.body.metadata;
  page.rec.title = result.body.metadata.title;
  $("#meta-form").dataset.loaded = "";
  render();
  status.textContent = t("archive.saved");
}

// -- consent -----------------------------------------------------------------------------------

function historyText(event) {
  const who = personName(event.seat);
  const what =
    event.kind === "copies"
      ? `${t("archive.consent_copies")}: ${yesNo(event.copies)}`
      : ["record", "archive", "public"]
          .map((kind) =>
            kind === "record"
              ? `${t("archive.consent_record")}: ${yesNo(event.record)}`
              : `${t(CONSENT_KEYS[kind])}: ${yesNo(event[kind])}`,
          )
          .join(", ");
  const source = SOURCE_KEYS[event.source] ? t(SOURCE_KEYS[event.source]) : event.source;
  const note = event.note ? ` — “${event.note}”` : "";
  return `${formatDate(event.at)} · ${who}: ${what} (${source})${note}`;
}

function renderConsent() {
  const bySeat = page.rec.consent_by_seat || {};
  $("#consent-body").replaceChildren(
    ...PARTICIPANTS.map((seat) =>
      el("tr", { dataset: { seat } }, [
        el("th", { attrs: { scope: "row" }, text: personName(seat) }),
        ...KINDS.map((kind) =>
          el("td", { text: yesNo((bySeat[seat] || {})[kind]), dataset: { consent: kind } }),
        ),
      ]),
    ),
  );
  $("#history").replaceChildren(
    ...(page.rec.consent_history || []).map((event) => el("li", { text: historyText(event) })),
  );
  const seatSelect = $("#c-seat");
  const chosen = seatSelect.value || "a";
  seatSelect.replaceChildren(
    ...PARTICIPANTS.map((seat) => el("option", { text: personName(seat), attrs: { value: seat } })),
  );
  seatSelect.value = chosen;
  for (const select of document.querySelectorAll(".consent-choice")) {
    const value = select.value;
    select.replaceChildren(
      el("option", { text: t("archive.unchanged"), attrs: { value: "" } }),
      el("option", { text: t("common.yes"), attrs: { value: "yes" } }),
      el("option", { text: t("common.no"), attrs: { value: "no" } }),
    );
    select.value = value;
  }
}

async function recordConsent(event) {
  event.preventDefault();
  const status = $("#consent-status");
  const body = { seat: $("#c-seat").value, note: $("#c-note").value.trim() };
  for (const kind of KINDS) {
    const value = $(`#c-${kind}`).value;
    if (value) {
      body[kind] = value === "yes";
    }
  }
  if (!KINDS.some((kind) => kind in body)) {
    status.textContent = t("archive.consent_choose");
    return;
  }
  status.textContent = t("common.saving");
  const result = await api("PUT", `/api/recordings/${RECORDING_ID}/consent`, body);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  $("#consent-form").reset();
  await load();
  status.textContent = t("archive.consent_recorded");
}

// -- copies --------------------------------------------------------------------------------------

async function issueCopies() {
  const status = $("#copies-status");
  status.textContent = t("common.saving");
  const result = await api("POST", `/api/recordings/${RECORDING_ID}/copies`);
  if (result.status !== 201) {
    const error = result.body && result.body.error;
    status.textContent =
      error && error.code === "no_copies_consent" ? t("archive.copies_need_consent") : apiError(result);
    return;
  }
  page.newLinks = result.body.links;
  await load();
  status.textContent = t("archive.copies_issued");
  $("#new-links").focus();
}

async function revoke(link) {
  const ok = await confirmDialog({
    title: t("archive.revoke_title", { name: personName(link.seat) }),
    body: t("archive.revoke_body"),
    confirm: t("archive.revoke"),
    danger: true,
  });
  if (!ok) {
    return;
  }
  const result = await api("POST", `/api/copies/${link.id}/revoke`);
  $("#copies-status").textContent = result.status === 200 ? t("archive.revoked") : apiError(result);
  await load();
}

function renderCopies() {
  const list = $("#new-links");
  list.hidden = !page.newLinks;
  list.tabIndex = -1;
  list.replaceChildren(
    ...(page.newLinks || []).map((link) =>
      linkItem({
        id: `copy-link-${link.seat}`,
        url: link.url,
        label: personName(link.seat),
        who: link.name,
        seat: link.seat,
      }),
    ),
  );
  $("#links-body").replaceChildren(
    ...(page.rec.copy_links || []).map((link) =>
      el("tr", { dataset: { link: link.id, state: link.state } }, [
        el("th", { attrs: { scope: "row" }, text: personName(link.seat) }),
        el("td", { text: t(LINK_STATE_KEYS[link.state] || "archive.link_active") }),
        el("td", { text: formatDate(link.expires_at, false) }),
        el("td", { text: String(link.downloads) }),
        el("td", {}, [
          link.state === "active"
            ? el("button", {
                className: "quiet small",
                text: t("archive.revoke"),
                attrs: {
                  type: "button",
                  "aria-label": t("archive.revoke_label", { name: personName(link.seat) }),
                },
                on: { click: () => revoke(link) },
              })
            : null,
        ]),
      ]),
    ),
  );
  $("#issue-copies").disabled = !accessFile();
}

// -- copies by email and clips ------------------------------------------------------------------
// What the automatic copy emails did (sent, when, how; "unconfirmed" when a send began and
// was never confirmed), a resend per participant, and a clip to cut and download.

const VIA_KEYS = { smtp: "archive.via_smtp", outbox: "archive.via_outbox" };
const CLIP_REFUSALS = {
  clip_too_long: "archive.clip_too_long",
  clip_too_short: "archive.clip_too_short",
  invalid_range: "archive.clip_bad",
  out_of_range: "archive.clip_outside",
};

function mailState(seat) {
  const mailing = (page.rec.copy_mailings || []).find((m) => m.seat === seat);
  if (!mailing) {
    return { text: t("archive.mail_not_sent"), state: "none" };
  }
  if (mailing.state !== "sent") {
    return { text: t("archive.mail_unconfirmed", { date: formatDate(mailing.claimed_at) }), state: "unconfirmed" };
  }
  const via = VIA_KEYS[mailing.via] ? t(VIA_KEYS[mailing.via]) : mailing.via;
  const key = mailing.error ? "archive.mail_sent_kept" : "archive.mail_sent";
  return { text: t(key, { date: formatDate(mailing.sent_at), via }), state: "sent" };
}

function mailItem(seat) {
  const contact = (page.rec.contacts || {})[seat];
  const shown = mailState(seat);
  const address = contact
    ? t("archive.mail_address", { email: contact.email, language: languageName(contact.language) })
    : t("archive.mail_no_address");
  return el("li", { className: "mail-item", dataset: { seat, mail: shown.state } }, [
    el("strong", { text: personName(seat) }),
    el("span", { className: "mail-address", text: address }),
    el("span", { className: "mail-state", text: shown.text }),
    el("button", {
      className: "small",
      text: t("archive.resend"),
      attrs: {
        type: "button",
        disabled: !contact || !accessFile(),
        "aria-label": t("archive.resend_label", { name: personName(seat) }),
      },
      on: { click: () => resend(seat, contact) },
    }),
  ]);
}

async function resend(seat, contact) {
  const name = personName(seat);
  const ok = await confirmDialog({
    title: t("archive.resend_title", { name }),
    body: t("archive.resend_body", { name, email: contact.email }),
    confirm: t("archive.resend_confirm"),
  });
  if (!ok) {
    return;
  }
  const status = $("#mail-status");
  status.textContent = t("common.saving");
  const result = await api("POST", `/api/recordings/${encodeURIComponent(RECORDING_ID)}/copies/${seat}/send`);
  if (result.status !== 201) {
    const error = result.body && result.body.error;
    const known = { no_copies_consent: "archive.copies_need_consent", no_contact: "archive.mail_no_address" };
    status.textContent = error && known[error.code] ? t(known[error.code]) : apiError(result);
    return;
  }
  await load();
  status.textContent = t("archive.resent", { name, email: contact.email });
}

function renderMailAndClips() {
  $("#mail-list").replaceChildren(...PARTICIPANTS.map(mailItem));
  const ready = Boolean(accessFile());
  $("#clip-card").hidden = !ready;
  $("#clip-intro").textContent = t("archive.clip_intro", { max: 3 });
}

/** "1:05", "65" or "1:02:05" as seconds; NaN for anything else. */
function parseClock(text) {
  const match = /^\s*(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d+)?)\s*$/.exec(text);
  if (!match) {
    return Number.NaN;
  }
  return Number(match[1] || 0) * 3600 + Number(match[2] || 0) * 60 + Number(match[3]);
}

async function cutClip(event) {
  event.preventDefault();
  const status = $("#clip-status");
  const start = parseClock($("#clip-start").value);
  const length = Number($("#clip-length").value);
  if (Number.isNaN(start) || !Number.isFinite(length) || length <= 0) {
    status.textContent = t("archive.clip_bad");
    return;
  }
  status.textContent = t("archive.clip_making");
  const result = await apiFile(`/api/recordings/${encodeURIComponent(RECORDING_ID)}/clip`, {
    start_s: start,
    end_s: start + length,
  });
  if (!result.blob) {
    const code = result.error ? result.error.code : "";
    status.textContent = CLIP_REFUSALS[code]
      ? t(CLIP_REFUSALS[code], { max: 3, length: formatClock(page.rec.duration_s || 0) })
      : result.error && result.error.message
        ? result.error.message
        : t("archive.clip_failed");
    return;
  }
  if (page.clipUrl) {
    URL.revokeObjectURL(page.clipUrl);
  }
  page.clipUrl = URL.createObjectURL(result.blob);
  const link = $("#clip-link");
  link.href = page.clipUrl;
  link.download = `clip-${RECORDING_ID}-${Math.floor(start)}.${result.blob.type === "audio/mpeg" ? "mp3" : "m4a"}`;
  link.hidden = false;
  status.textContent = t("archive.clip_ready", { start: formatClock(start), length: formatClock(length) });
  link.click();
}

function startMailAndClips() {
  $("#clip-form").addEventListener("submit", cutClip);
  $("#clip-here").addEventListener("click", () => {
    const time = page.player ? page.player.audio.currentTime || 0 : 0;
    $("#clip-start").value = formatClock(time);
  });
}

// -- files and exports ------------------------------------------------------------------------------

function renderFiles() {
  $("#files-body").replaceChildren(
    ...(page.rec.files || []).map((file) =>
      el("tr", { dataset: { file: file.name } }, [
        el("th", { attrs: { scope: "row" } }, [
          el("a", { text: file.name, attrs: { href: file.url, download: "" } }),
        ]),
        el("td", { text: KIND_KEYS[file.kind] ? t(KIND_KEYS[file.kind]) : file.kind }),
        el("td", { text: formatBytes(file.bytes), attrs: { title: `${file.bytes} B` } }),
        el("td", {}, [el("code", { className: "checksum", text: `sha256:${file.sha256}` })]),
      ]),
    ),
  );
}

function renderExports() {
  const archivable = Boolean((page.rec.consent || {}).archive);
  $("#export").disabled = !archivable || page.rec.status !== "ready";
  if (!archivable) {
    $("#export-status").textContent = t("archive.export_no_consent");
  }
  $("#exports").replaceChildren(
    ...(page.rec.exports || []).map((bag) =>
      el("li", { dataset: { export: bag.id } }, [
        el("span", {
          text: t("archive.export_line", {
            date: formatDate(bag.created_at),
            who: bag.created_by,
            files: bag.files,
            size: formatBytes(bag.bytes),
          }),
        }),
        " ",
        bag.url
          ? el("a", { text: t("archive.export_download"), attrs: { href: bag.url, download: "" } })
          : el("span", { className: "hint", text: t("archive.export_removed") }),
      ]),
    ),
  );
}

async function exportBag() {
  const status = $("#export-status");
  const button = $("#export");
  button.disabled = true;
  status.textContent = t("archive.exporting");
  const result = await api("POST", `/api/recordings/${RECORDING_ID}/exports`);
  button.disabled = false;
  if (result.status !== 201) {
    status.textContent = apiError(result);
    return;
  }
  await load();
  status.textContent = t("archive.exported", { oxum: result.body.export.payload_oxum });
}

async function deleteRecording() {
  const ok = await confirmDialog({
    title: t("archive.delete_confirm_title"),
    body: t("archive.delete_confirm_body", { title: page.rec.title || page.rec.id }),
    confirm: t("archive.delete_confirm"),
    danger: true,
  });
  if (!ok) {
    return;
  }
  const status = $("#delete-status");
  status.textContent = t("archive.deleting");
  const result = await api("DELETE", `/api/recordings/${RECORDING_ID}`);
  if (result.status !== 200) {
    status.textContent = apiError(result);
    return;
  }
  location.assign("/staff/recordings");
}

async function main() {
  tableHead($("#consent-table"), ["archive.col_person", ...KINDS.map((kind) => CONSENT_KEYS[kind])]);
  tableHead(
    $("#links-table"),
    [
      "archive.col_person",
      "archive.col_link_state",
      "archive.col_expires",
      "archive.col_downloads",
      "archive.col_actions",
    ],
    { hidden: ["archive.col_actions"] },
  );
  tableHead($("#files-table"), ["archive.col_file", "archive.col_kind", "archive.col_size", "archive.col_checksum"]);
  if (!(await startStaffPage("recordings"))) {
    return;
  }
  onLanguageChange(render);
  $("#transcript-search").addEventListener("input", renderTranscript);
  $("#meta-form").addEventListener("submit", saveMetadata);
  $("#consent-form").addEventListener("submit", recordConsent);
  $("#issue-copies").addEventListener("click", issueCopies);
  $("#export").addEventListener("click", exportBag);
  $("#delete").addEventListener("click", deleteRecording);
  startMailAndClips();
  if (await load()) {
    await loadTranscript();
  }
}

main();
