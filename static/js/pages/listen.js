// Listen in public: the conversations both participants agreed to make public, each with
// the two first names and short bios (nothing else about them), the questions as
// chapters, the player and the waveform. English at /listen, Spanish at /escuchar.
// The list is asked for each time the page opens: a withdrawal takes a conversation
// off at once.

import { callApi } from "../lib/api.js";
import { formatClock } from "../lib/format.js";
import { chosenLanguage, onLanguageChange, t } from "../lib/i18n.js";
import { buildPlayer } from "../lib/player.js";
import { drawTopbar, startLanguage } from "../lib/topbar.js";
import { $, el } from "../lib/ui.js";

const page = { recordings: null };

function formatDay(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleDateString(document.documentElement.lang, {
    dateStyle: "long",
  });
}

function conversation(rec, index) {
  const titleId = `conversation-${index}`;
  const names = rec.people.map((person) => person.name);
  const people = el(
    "ul",
    { className: "people" },
    rec.people.map((person) =>
      el("li", {}, [el("strong", { text: person.name }), person.bio ? ` — ${person.bio}` : ""]),
    ),
  );
  const facts = [formatDay(rec.recorded_at)];
  if (rec.duration_s) {
    facts.push(formatClock(rec.duration_s));
  }
  const playerRoot = el("div", { className: "player-block" });
  const card = el("article", { className: "card conversation", attrs: { "aria-labelledby": titleId } }, [
    el("h2", { text: rec.title, attrs: { id: titleId } }),
    el("p", { className: "lead", text: t("listen.between", { a: names[0] || "", b: names[1] || "" }) }),
    people,
    el("p", { className: "hint", text: facts.join(" · ") }),
    rec.description ? el("p", { text: rec.description }) : null,
    playerRoot,
  ]);
  card.dataset.recording = rec.id;
  buildPlayer(playerRoot, {
    src: rec.audio_url,
    chapters: rec.chapters || [],
    duration: rec.duration_s || 0,
    waveformUrl: rec.waveform_url,
    captionsUrl: rec.captions_url,
    label: t("listen.player", { title: rec.title }),
  });
  return card;
}

function render() {
  if (!page.recordings) {
    return;
  }
  $("#listen-empty").hidden = page.recordings.length > 0;
  $("#conversations").replaceChildren(...page.recordings.map(conversation));
}

async function main() {
  drawTopbar({ heading: "listen.heading" });
  const spanish = window.location.pathname.startsWith("/escuchar");
  await startLanguage("listen", spanish ? "es" : chosenLanguage("listen") || undefined);
  onLanguageChange(render);
  $("#listen-status").textContent = t("listen.loading");
  const result = await callApi("GET", "/api/public/recordings");
  if (result.status !== 200) {
    $("#listen-status").textContent = t("listen.failed");
    return;
  }
  $("#listen-status").textContent = "";
  page.recordings = result.body.recordings;
  render();
}

main();
