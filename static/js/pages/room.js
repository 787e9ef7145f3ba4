// The participant page: checks, consent, question agreement and the conversation. In a
// self-guided room (no facilitator) it also shows the guided introduction and the
// controls either person uses to run the conversation (lib/guided.js).

import { makeMeter, setMeter } from "../lib/audio.js";
import { GuidedControls, guidedIntro } from "../lib/guided.js";
import { language, onLanguageChange, t } from "../lib/i18n.js";
import { browserSupport } from "../lib/microphone.js";
import { showOrganisation } from "../lib/organisation.js";
import { questionText, themeGroups } from "../lib/questions.js";
import { RoomView, drawFinalize } from "../lib/room-view.js";
import { $, confirmDialog, el, errorText, keepFocus, setText, show } from "../lib/ui.js";

const CHOOSE_DELAY_MS = 400;

const view = new RoomView({ render: renderPage, page: "room" });
const client = view.client;

const page = {
  phase: "loading",
  lastCueSeq: undefined,
  consentDirty: false,
  chosen: null, // Set of question ids, from the first snapshot on
  chooseTimer: null,
  builtQuestionsFor: null,
  meters: {},
  allSet: false,
  finalizeNodes: null,
  doneChoosing: false, // the person said their questions are marked ("Done")
  guided: null, // GuidedControls, once the page is built
};

// "Done choosing" outlives a reload of this seat's page (this tab only).
const DONE_KEY = `storyroom.doneChoosing.${location.pathname}`;

function me() {
  return view.snapshot.you;
}

function partnerSeat() {
  return me() === "a" ? "b" : "a";
}

/** A self-guided room: two people who know each other, no facilitator. */
function isGuided() {
  return view.snapshot.session.kind === "self_guided";
}

function phaseFor(state) {
  if (state === "recording" || state === "paused") {
    return "live";
  }
  return view.takeOpen ? "setup" : "ended";
}

// -- rendering -----------------------------------------------------------------------

function renderPage() {
  if (!view.snapshot || document.body.dataset.phase === "refused") {
    return;
  }
  const snap = view.snapshot;
  const partner = snap.seats[partnerSeat()];
  const guided = isGuided();
  const facilitator = snap.seats.facilitator || { name: "", connected: false };
  const mine = snap.seats[me()];

  $("#welcome-title").textContent = t("welcome.hello", { name: mine.name });
  showOrganisation($("#organisation"), snap.session.organisation);
  $("#welcome-intro").textContent = guided
    ? t("welcome.intro_guided", { partner: partner.name, minutes: snap.session.target_minutes })
    : t("welcome.intro", {
        partner: partner.name,
        facilitator: facilitator.name,
        minutes: snap.session.target_minutes,
      });
  $("#partner-label").textContent = t("people.partner");
  $("#partner-name").textContent = partner.name;
  $("#partner-bio").textContent = partner.bio || "";
  $("#facilitator-name").textContent = facilitator.name;
  renderPresence($("#partner-presence"), partner.connected);
  renderPresence($("#facilitator-presence"), facilitator.connected);
  show($("#facilitator"), !guided);
  show($("#questions-step"), !guided);
  show($(".agreed-live"), !guided); // no agreed list: the whole bank is in the controls

  const phase = phaseFor(view.state);
  const allSet = phase === "setup" && isAllSet();
  if (phase !== page.phase || allSet !== page.allSet) {
    // Once everything is done, and during the conversation, the setup steps fold away
    // (still there to open).
    const open = phase === "setup" && !allSet;
    $("#check-step").open = open;
    $("#consent-step").open = open;
    $("#questions-step").open = open && !guided;
    page.phase = phase;
    page.allSet = allSet;
  }
  document.body.dataset.phase = phase;
  document.body.dataset.allSet = allSet ? "true" : "false";
  show($("#all-set"), allSet);
  setText(
    $("#all-set-title"),
    guided ? t("allset.title_guided") : t("allset.title", { facilitator: facilitator.name }),
  );
  show($("#live"), phase === "live");
  show($("#ended"), phase === "ended");

  renderConsent();
  renderQuestions();
  renderDone();
  renderCue();
  renderPaused();
  renderEnded();
  if (guided) {
    page.guided.render();
  }
}

/** Everything a participant can do before the recording is done: the microphone is on,
 * the consent to record is saved, and they said they are done marking questions (with
 * at least one marked). The steps fold only then, never under their finger. */
function isAllSet() {
  const mine = view.snapshot.seats[me()];
  const consented = Boolean(mine.consent && mine.consent.record) && !page.consentDirty;
  const micOn = Boolean(view.mic && view.mic.state === "on");
  // a self-guided room marks no questions: both see the whole bank and either asks
  const chosen = isGuided() || (page.doneChoosing && markedCount() > 0);
  return consented && chosen && micOn;
}

function markedCount() {
  return (view.snapshot.seats[me()].chosen || []).length;
}

function rememberDone(done) {
  page.doneChoosing = done;
  try {
    if (done) {
      sessionStorage.setItem(DONE_KEY, "1");
    } else {
      sessionStorage.removeItem(DONE_KEY);
    }
  } catch {
    // without storage it lasts as long as this page
  }
}

function doneChoosing() {
  if (markedCount() === 0) {
    return;
  }
  rememberDone(true);
  view.render();
  const card = $("#all-set");
  if (!card.hidden) {
    card.scrollIntoView({ block: "start" });
    card.focus();
  }
}

/** The "Done" button under the questions, and why it cannot be pressed yet. */
function renderDone() {
  const button = $("#choose-done");
  const marked = markedCount();
  button.disabled = marked === 0 || !view.takeOpen;
  if (marked === 0 && page.doneChoosing) {
    rememberDone(false);
  }
  let reason = "";
  if (marked === 0) {
    reason = t("questions.done_reason_none");
  } else if (page.allSet) {
    reason = t("questions.done_already");
  } else if (page.doneChoosing) {
    reason = t("questions.done_waiting");
  }
  setText($("#choose-done-reason"), view.takeOpen ? reason : "");
}

function renderPaused() {
  const paused = view.state === "paused";
  $("#live").dataset.state = paused ? "paused" : "recording";
  show($("#paused-notice"), paused);
  setText($("#paused-notice"), paused ? t("live.paused_notice") : "");
}

/** The end screen: thanks, where the files are, and what happens next. */
function renderEnded() {
  if (page.phase !== "ended") {
    return;
  }
  const mine = view.snapshot.seats[me()];
  setText($("#ended-title"), t("ended.title_name", { name: mine.name }));
  setText($("#ended-body"), t(view.captureSaving ? "ended.body_capture" : "ended.body"));
  if (!page.finalizeNodes) {
    page.finalizeNodes = drawFinalize($("#ended-files"));
  }
  view.renderFinalize(page.finalizeNodes);
  const consent = mine.consent;
  const yesNo = (value) => t(value ? "common.yes" : "common.no");
  setText(
    $("#ended-choices"),
    consent
      ? t("ended.next_choices", { archive: yesNo(consent.archive), public: yesNo(consent.public) })
      : t("ended.next_choices_none"),
  );
}

function renderPresence(node, connected) {
  node.textContent = connected ? t("people.here") : t("people.not_here");
  node.dataset.connected = connected ? "true" : "false";
}

function renderConsent() {
  const snap = view.snapshot;
  const mine = snap.seats[me()].consent;
  const partner = snap.seats[partnerSeat()];
  const locked = !view.takeOpen;
  $("#consent-fieldset").disabled = locked;
  if (mine && (!page.consentDirty || locked)) {
    $("#consent-record").checked = mine.record;
    $("#consent-archive").checked = mine.archive;
    $("#consent-public").checked = mine.public;
    page.consentDirty = false;
  }
  const yesNo = (value) => t(value ? "common.yes" : "common.no");
  const lines = [];
  if (page.consentDirty) {
    lines.push(t("consent.unsaved"));
  } else if (mine) {
    lines.push(
      t("consent.saved", {
        record: yesNo(mine.record),
        archive: yesNo(mine.archive),
        public: yesNo(mine.public),
      }),
    );
    if (!mine.record) {
      lines.push(t("consent.record_needed"));
    }
    if (mine.public && partner.consent && !partner.consent.public) {
      lines.push(t("consent.public_partner_no", { partner: partner.name }));
    }
  } else {
    lines.push(t("consent.not_yet"));
  }
  if (locked) {
    lines.push(t("consent.locked"));
  }
  const status = $("#consent-status");
  status.textContent = lines.join(" ");
  status.dataset.saved = mine && !page.consentDirty ? "true" : "false";
}

function questionsById() {
  return new Map(view.snapshot.questions.map((q) => [q.id, q]));
}

function buildQuestionGroups() {
  const snap = view.snapshot;
  const container = $("#question-groups");
  keepFocus(container, () => {
    const item = (question) => {
      const id = `choose-${question.id}`;
      const box = el("input", {
        attrs: { type: "checkbox", id, value: question.id },
        dataset: { focusKey: id },
        on: { change: () => toggleChoice(question.id, box.checked) },
      });
      return el("li", { className: "choice question-choice", dataset: { question: question.id } }, [
        box,
        el("label", { attrs: { for: id } }, [
          el("span", { className: "choice-title", text: questionText(question, snap.session.language) }),
          el("span", { className: "partner-mark" }),
        ]),
      ]);
    };
    container.replaceChildren(...themeGroups(snap.questions, "question-choices", item));
  });
  page.builtQuestionsFor = language();
}

function renderQuestions() {
  const snap = view.snapshot;
  if (page.builtQuestionsFor !== language()) {
    buildQuestionGroups();
  }
  if (page.chosen === null) {
    page.chosen = new Set(snap.seats[me()].chosen || []);
  }
  const partner = snap.seats[partnerSeat()];
  const partnerChose = new Set(partner.chosen || []);
  $("#choose-fieldset").disabled = view.state === "stopped" && !view.takeOpen;
  for (const item of document.querySelectorAll(".question-choice")) {
    const id = item.dataset.question;
    item.querySelector("input").checked = page.chosen.has(id);
    item.querySelector(".partner-mark").textContent = partnerChose.has(id)
      ? t("questions.partner_chose", { partner: partner.name })
      : "";
  }
  renderAgreed($("#agreed-list"), $("#agreed-empty"));
  renderAgreed($("#agreed-live-list"), $("#agreed-live-empty"));
}

function renderAgreed(list, empty) {
  const snap = view.snapshot;
  const byId = questionsById();
  const cued = new Set(snap.cues.map((cue) => cue.question_id));
  const current = snap.cue ? snap.cue.question_id : null;
  const items = snap.agreed
    .filter((id) => byId.has(id))
    .map((id) => {
      const item = el("li", { text: questionText(byId.get(id), snap.session.language) });
      if (id === current) {
        item.setAttribute("aria-current", "true");
        item.className = "current";
      } else if (cued.has(id)) {
        item.className = "done";
      }
      return item;
    });
  list.replaceChildren(...items);
  show(empty, items.length === 0);
}

function renderCue() {
  const snap = view.snapshot;
  const cue = snap.cue;
  const text = cue ? questionText(questionsById().get(cue.question_id), snap.session.language) : "";
  const node = $("#cue-text");
  node.textContent = text || t(isGuided() ? "guided.no_cue" : "live.no_cue");
  node.dataset.empty = text ? "false" : "true";
  const seq = cue ? cue.seq : null;
  if (page.lastCueSeq !== undefined && seq !== page.lastCueSeq && text) {
    $("#cue-announcer").textContent = t("live.cue_announce", { question: text });
  }
  page.lastCueSeq = seq;
}

function renderBrowserChecks() {
  const support = browserSupport();
  const checks = [
    ["secure", support.secure],
    ["webrtc", support.webrtc],
    ["microphone", support.microphone],
  ];
  const items = checks.map(([name, ok]) =>
    el("li", { className: ok ? "ok" : "bad", dataset: { check: name } }, [
      el("span", {
        className: "check-mark",
        text: ok ? "✓" : "✗",
        attrs: { "aria-hidden": "true" },
      }),
      el("span", { text: t(ok ? `check.${name}_ok` : `check.${name}_bad`) }),
    ]),
  );
  $("#browser-checks").replaceChildren(...items);
  const advice = $("#browser-advice");
  const bad = checks.find(([, ok]) => !ok);
  show(advice, Boolean(bad));
  advice.textContent = bad ? t(`check.${bad[0]}_advice`) : "";
}

// -- levels ------------------------------------------------------------------------

function setupMeters() {
  for (const [slot, who] of [
    ["#partner-meter-slot", "partner"],
    ["#facilitator-meter-slot", "facilitator"],
  ]) {
    const labelId = `${who}-meter-label`;
    const label = el("span", { className: "label", attrs: { id: labelId } });
    const meter = makeMeter(labelId);
    $(slot).replaceChildren(label, meter);
    page.meters[who] = { meter, label };
  }
}

function tickLevels() {
  if (view.snapshot) {
    const seats = view.snapshot.seats;
    for (const [who, seat] of [
      ["partner", partnerSeat()],
      ["facilitator", "facilitator"],
    ]) {
      if (!seats[seat]) {
        continue; // a self-guided room has no facilitator
      }
      const { meter, label } = page.meters[who];
      const text = t("people.level", { name: seats[seat].name });
      if (label.textContent !== text) {
        label.textContent = text;
      }
      setMeter(meter, seatLevel(seat));
    }
  }
  requestAnimationFrame(tickLevels);
}

function seatLevel(seat) {
  return view.snapshot.seats[seat].connected ? view.seatLevel(seat) : 0;
}

// -- actions ------------------------------------------------------------------------

async function saveConsent(event) {
  event.preventDefault();
  const consent = {
    record: $("#consent-record").checked,
    archive: $("#consent-archive").checked,
    public: $("#consent-public").checked,
  };
  $("#consent-status").textContent = t("common.saving");
  const ack = await client.consent(consent);
  if (ack.ok) {
    page.consentDirty = false;
    view.render();
  } else {
    $("#consent-status").textContent = errorText(ack.error);
  }
}

function toggleChoice(id, checked) {
  if (checked) {
    page.chosen.add(id);
  } else {
    page.chosen.delete(id);
  }
  $("#choose-status").textContent = t("common.saving");
  clearTimeout(page.chooseTimer);
  page.chooseTimer = setTimeout(sendChoices, CHOOSE_DELAY_MS);
}

async function sendChoices() {
  const ids = view.snapshot.questions.map((q) => q.id).filter((id) => page.chosen.has(id));
  const ack = await client.choose(ids);
  const status = $("#choose-status");
  status.textContent = ack.ok ? t("questions.saved", { n: ids.length }) : errorText(ack.error);
  status.dataset.saved = ack.ok ? "true" : "false";
}

async function leave() {
  const ok = await confirmDialog({
    title: t("leave.title"),
    body: view.state === "recording" ? t("leave.body_recording") : t("leave.body"),
    confirm: t("leave.confirm"),
    cancel: t("leave.cancel"),
    danger: true,
  });
  if (ok) {
    view.leave();
  }
}

// -- start ----------------------------------------------------------------------------

async function main() {
  await view.init();
  await guidedIntro();
  page.guided = new GuidedControls(view);
  onLanguageChange(renderBrowserChecks);
  renderBrowserChecks();
  setupMeters();
  view.startMicrophone();

  $("#consent-form").addEventListener("submit", saveConsent);
  $("#consent-form").addEventListener("change", () => {
    page.consentDirty = true;
    if (view.snapshot) {
      renderConsent();
    }
  });
  $("#leave-button").addEventListener("click", leave);
  $("#choose-done").addEventListener("click", doneChoosing);
  try {
    page.doneChoosing = sessionStorage.getItem(DONE_KEY) === "1";
  } catch {
    page.doneChoosing = false;
  }
  requestAnimationFrame(tickLevels);
  view.start();
}

main();
