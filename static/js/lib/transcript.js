// A recording's transcription status in words, for the staff recording page and the
// facilitator's console (both get `{status, voices_done, voices_total, reason}`).

import { t } from "./i18n.js";

/** What a transcript's status says to people; "" for a transcript ready in full. */
export function transcriptStatusText(status) {
  if (!status) {
    return t("transcript.none");
  }
  switch (status.status) {
    case "queued":
      return t("transcript.queued");
    case "transcribing":
      return t("transcript.transcribing", { done: status.voices_done, total: status.voices_total });
    case "failed":
      return t("transcript.failed", { reason: status.reason || "" });
    case "unavailable":
      return t("transcript.unavailable");
    case "withdrawn":
      return t("transcript.withdrawn");
    default:
      return status.reason ? t("transcript.ready_partial", { reason: status.reason }) : "";
  }
}
