// A participant's own copy: their link (the key rides in the #fragment, never sent in a
// URL) plays the conversation with its questions as chapters and its waveform, downloads
// it, shows and changes their own consent to archiving and publishing with what each
// means and which side a choice waits for, and, for a conversation both made public,
// cuts a clip to share. Opening the page gives the browser a cookie for the copy's
// reading routes only, so the player streams it.

import { callApi, fetchBlob, fetchMade, refusal } from "../lib/api.js";
import { showOrganisation } from "../lib/organisation.js";
import { buildPlayer } from "../lib/player.js";
import { formatClock } from "../lib/format.js";
import { chosenLanguage, isLanguage, onLanguageChange, setLanguage, t } from "../lib/i18n.js";
import { drawTopbar, startLanguage } from "../lib/topbar.js";
import { $ } from "../lib/ui.js";

const REFUSALS = {
  link_missing: "copy.refused_missing",
  link_invalid: "copy.refused_invalid",
  link_expired: "copy.refused_expired",
  link_revoked: "copy.refused_revoked",
};

const page = { token: null, copy: null, objectUrl: null, clipUrl: null, player: null, playerFor: null };

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  return params.get("token");
}

function call(method, path, body) {
  return callApi(method, path, { body, bearer: page.token });
}

function refuse(code) {
  $("#copy").hidden = true;
  $("#refused").hidden = false;
  $("#refused-text").textContent = t(REFUSALS[code] || "copy.refused_invalid");
}

function formatDay(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleDateString(document.documentElement.lang, {
    dateStyle: "long",
  });
}

function render() {
  const copy = page.copy;
  if (!copy) {
    return;
  }
  $("#refused").hidden = true;
  $("#copy").hidden = false;
  $("#greeting").textContent = t("copy.greeting", { name: copy.name });
  showOrganisation($("#organisation"), copy.organisation);
  const parts = [copy.title, formatDay(copy.recorded_at)];
  if (copy.duration_s) {
    parts.push(formatClock(copy.duration_s));
  }
  $("#copy-summary").textContent = parts.join(" · ");
  const shared = copy.copies_allowed && copy.file;
  $("#download-block").hidden = !shared;
  $("#no-copies").hidden = Boolean(shared);
  $("#expires").textContent = t("copy.expires", { date: formatDay(copy.expires_at) });
  $("#consent-archive").checked = copy.consent.archive;
  $("#consent-public").checked = copy.consent.public;
  for (const kind of ["archive", "public"]) {
    $(`#state-${kind}`).textContent = choiceState(kind);
  }
  $("#clip-card").hidden = !(shared && copy.in_effect.public);
  // built again for a new language, unless it is playing (that would stop it)
  const playing = page.player && !page.player.audio.paused;
  if (shared && !playing && page.playerFor !== document.documentElement.lang) {
    page.playerFor = document.documentElement.lang;
    page.player = buildPlayer($("#copy-player"), {
      src: copy.file.url,
      chapters: copy.chapters || [],
      duration: copy.duration_s || 0,
      waveformUrl: copy.waveform_url,
      captionsUrl: copy.captions_url,
      label: t("copy.player"),
    });
  }
}

/** What a choice means now: in effect, or which side it waits for. */
function choiceState(kind) {
  const copy = page.copy;
  const mine = copy.consent[kind];
  const theirs = copy.partner[kind];
  const partner = copy.partner.name;
  if (mine && theirs) {
    return t(kind === "archive" ? "copy.state_archive_both" : "copy.state_public_both", { partner });
  }
  if (mine) {
    return t("copy.state_waiting_partner", { partner });
  }
  if (theirs) {
    return t("copy.state_waiting_you", { partner });
  }
  return t("copy.state_neither", { partner });
}

/** "1:05" or "65" as seconds; NaN for anything else. */
function parseTime(text) {
  const match = /^\s*(?:(\d+):)?(\d+(?:\.\d+)?)\s*$/.exec(text);
  if (!match) {
    return Number.NaN;
  }
  return Number(match[1] || 0) * 60 + Number(match[2]);
}

async function makeClip(event) {
  event.preventDefault();
  const status = $("#clip-status");
  const start = parseTime($("#clip-start").value);
  const end = parseTime($("#clip-end").value);
  if (Number.isNaN(start) || Number.isNaN(end)) {
    status.textContent = t("copy.clip_bad_time");
    return;
  }
  status.textContent = t("copy.clip_making");
  const result = await fetchMade("/api/copy/clip", {
    body: { start_s: start, end_s: end },
    bearer: page.token,
  });
  if (!result.blob) {
    const code = result.error ? result.error.code : "";
    status.textContent = t(CLIP_REFUSALS[code] || "copy.clip_failed", {
      max: Math.round((page.copy.clip_max_s || 180) / 60),
    });
    return;
  }
  const blob = result.blob;
  if (page.clipUrl) {
    URL.revokeObjectURL(page.clipUrl);
  }
  page.clipUrl = URL.createObjectURL(blob);
  const link = $("#clip-link");
  link.href = page.clipUrl;
  link.download = blob.type === "audio/mpeg" ? "clip.mp3" : "clip.m4a";
  link.hidden = false;
  status.textContent = t("copy.clip_ready");
  link.click();
}

const CLIP_REFUSALS = {
  clip_too_long: "copy.clip_too_long",
  clip_too_short: "copy.clip_too_short",
  invalid_range: "copy.clip_reversed",
  out_of_range: "copy.clip_outside",
  not_public: "copy.clip_not_public",
};

async function download() {
  const status = $("#download-status");
  const button = $("#download");
  button.disabled = true;
  status.textContent = t("copy.downloading");
  const blob = await fetchBlob("/api/copy/file", { bearer: page.token });
  button.disabled = false;
  if (!blob) {
    status.textContent = t("copy.download_failed");
    return;
  }
  if (page.objectUrl) {
    URL.revokeObjectURL(page.objectUrl);
  }
  page.objectUrl = URL.createObjectURL(blob);
  const link = $("#save-link");
  link.href = page.objectUrl;
  link.download = page.copy.file.name.endsWith(".mp3") ? "conversation.mp3" : page.copy.file.name;
  link.hidden = false;
  status.textContent = t("copy.downloaded");
  link.click();
}

async function saveConsent(event) {
  event.preventDefault();
  const status = $("#consent-status");
  status.textContent = t("common.saving");
  const consent = { archive: $("#consent-archive").checked, public: $("#consent-public").checked };
  const result = await call("PUT", "/api/copy/consent", consent);
  if (result.status !== 200) {
    status.textContent = result.status === 0 ? t("staff.error_network") : t("copy.consent_failed");
    return;
  }
  const fresh = await call("GET", "/api/copy");
  if (fresh.status === 200) {
    page.copy = fresh.body; // the partner's side and what is in effect now
  } else {
    page.copy.consent = result.body.consent;
  }
  render();
  status.textContent = t("copy.consent_saved");
}

async function main() {
  page.token = tokenFromFragment();
  drawTopbar();
  await startLanguage("copy");
  onLanguageChange(render);
  $("#download").addEventListener("click", download);
  $("#consent-form").addEventListener("submit", saveConsent);
  $("#clip-form").addEventListener("submit", makeClip);
  if (!page.token) {
    refuse("link_missing");
    return;
  }
  $("#copy-status").textContent = t("copy.loading");
  const result = await call("GET", "/api/copy");
  $("#copy-status").textContent = "";
  if (result.status !== 200) {
    const error = refusal(result);
    if (result.status === 0) {
      $("#copy-status").textContent = t("staff.error_network");
      return;
    }
    refuse(error ? error.code : "link_invalid");
    return;
  }
  page.copy = result.body;
  if (!chosenLanguage("copy") && isLanguage(page.copy.language)) {
    await setLanguage(page.copy.language);
  }
  render();
}

main();
