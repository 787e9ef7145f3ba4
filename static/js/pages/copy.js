// A participant's own copy: their link (the key rides in the #fragment, never sent in a
// URL) downloads the conversation's listening copy, and shows and changes their own
// consent to archiving and publishing.

import { callApi, fetchBlob, refusal } from "../lib/api.js";
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

const page = { token: null, copy: null, objectUrl: null };

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
}

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
  const player = $("#player");
  player.src = page.objectUrl;
  player.hidden = false;
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
  page.copy.consent = result.body.consent;
  status.textContent = t("copy.consent_saved");
}

async function main() {
  page.token = tokenFromFragment();
  drawTopbar();
  await startLanguage("copy");
  onLanguageChange(render);
  $("#download").addEventListener("click", download);
  $("#consent-form").addEventListener("submit", saveConsent);
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
