// The facilitator console: seats, recording controls, cues, the agreed list, markers,
// private notes and the facilitator's own microphone.

import { connectionQuality, makeMeter, setMeter } from "../lib/audio.js";
import { formatClock, formatTimeOfDay } from "../lib/format.js";
import { t } from "../lib/i18n.js";
import { questionText, themeGroups } from "../lib/questions.js";
import { RoomView, drawFinalize } from "../lib/room-view.js";
import { transcriptStatusText } from "../lib/transcript.js";
import { $, confirmDialog, el, errorText, keepFocus, setText, show } from "../lib/ui.js";

const SEATS = ["a", "b", "facilitator"];
const PARTICIPANTS = ["a", "b"];

const view = new RoomView({ render: renderPage, page: "console" });
const client = view.client;

const page = {
  seatNodes: {},
  lastState: null,
  lastCueSeq: undefined,
  busy: false,
  // Edits to the agreed list not yet confirmed by a snapshot: the base for the next edit,
  // so quick successive clicks do not undo each other.
  pendingAgreed: null,
  agreedRequests: 0,
  finalizeNodes: null,
  capture: null, // the latest capture:progress: how much of each seat's backup arrived
};

function agreedList() {
  return page.pendingAgreed || view.snapshot.agreed;
}

function isLive() {
  return view.state === "recording" || view.state === "paused";
}

function questionsById() {
  return new Map(view.snapshot.questions.map((q) => [q.id, q]));
}

function textOf(id) {
  return questionText(questionsById().get(id), view.snapshot.session.language);
}

/** The question after the current cue in the agreed list (else the first not yet cued). */
function nextQuestionId() {
  const snap = view.snapshot;
  if (!snap) {
    return null;
  }
  const agreed = snap.agreed;
  const current = snap.cue ? snap.cue.question_id : null;
  const at = current ? agreed.indexOf(current) : -1;
  if (at >= 0) {
    return at + 1 < agreed.length ? agreed[at + 1] : null;
  }
  const cued = new Set(snap.cues.map((cue) => cue.question_id));
  return agreed.find((id) => !cued.has(id)) || null;
}

// -- rendering -----------------------------------------------------------------------

function renderPage() {
  if (!view.snapshot || document.body.dataset.phase === "refused") {
    return;
  }
  document.body.dataset.phase = view.state;
  renderSeats();
  renderRecording();
  renderCue();
  renderAgreed();
  renderBank();
  renderMarkers();
  renderNotes();
}

function buildSeatCards() {
  const list = $("#seat-cards");
  for (const seat of SEATS) {
    const labelId = `seat-${seat}-level`;
    const nodes = {
      role: el("span", { className: "seat-role" }),
      name: el("span", { className: "seat-name" }),
      presence: el("p", { className: "presence" }),
      consent: el("ul", { className: "consent-summary" }),
      chosen: el("p", { className: "hint" }),
      levelLabel: el("span", { className: "label", attrs: { id: labelId } }),
      meter: makeMeter(labelId),
      quality: el("p", { className: "quality" }),
      backup: el("p", { className: "backup", attrs: { hidden: true } }),
    };
    nodes.card = el("li", { className: "seat-card", dataset: { seat } }, [
      el("h3", {}, [nodes.role, el("span", { text: " " }), nodes.name]),
      nodes.presence,
      seat === "facilitator" ? null : nodes.consent,
      seat === "facilitator" ? null : nodes.chosen,
      el("div", { className: "seat-level" }, [nodes.levelLabel, nodes.meter]),
      nodes.quality,
      nodes.backup,
    ]);
    page.seatNodes[seat] = nodes;
    list.append(nodes.card);
  }
}

function renderSeats() {
  const seats = view.snapshot.seats;
  for (const seat of SEATS) {
    const info = seats[seat];
    const nodes = page.seatNodes[seat];
    const you = seat === view.snapshot.you;
    nodes.role.textContent = t(`seat.${seat}`);
    nodes.name.textContent = you ? t("console.you", { name: info.name }) : info.name;
    nodes.card.dataset.connected = info.connected ? "true" : "false";
    nodes.presence.textContent = info.connected ? t("console.connected") : t("console.not_connected");
    nodes.presence.dataset.connected = info.connected ? "true" : "false";
    nodes.levelLabel.textContent = t("console.level");
    renderBackup(seat, nodes.backup);
    if (seat !== "facilitator") {
      const consent = info.consent;
      const items = ["record", "archive", "public"].map((kind) => {
        const value = consent ? consent[kind] : null;
        const answer = value === null ? t("console.consent_unknown") : t(value ? "common.yes" : "common.no");
        return el("li", { dataset: { kind, value: String(value) } }, [
          el("span", { className: "consent-kind", text: t(`console.consent_${kind}`) }),
          el("span", { className: "consent-value", text: answer }),
        ]);
      });
      nodes.consent.replaceChildren(...items);
      nodes.chosen.textContent = t("console.chosen_count", { n: (info.chosen || []).length });
    }
  }
}

/** How much of the seat's own browser copy of the take has arrived (capture:progress). */
function renderBackup(seat, node) {
  const rec = view.snapshot.recording;
  const progress = page.capture && rec.id && page.capture.recording_id === rec.id ? page.capture.seats[seat] : null;
  show(node, Boolean(progress));
  if (!progress) {
    return;
  }
  const complete = progress.closed && progress.percent >= 100;
  node.dataset.state = complete ? "complete" : "arriving";
  setText(node, complete ? t("console.backup_done") : t("console.backup", { n: progress.percent }));
}

function startBlockers() {
  const seats = view.snapshot.seats;
  const absent = SEATS.filter((seat) => !seats[seat].connected).map((seat) => seats[seat].name);
  if (absent.length) {
    return t("console.waiting_join", { names: absent.join(", ") });
  }
  const noConsent = PARTICIPANTS.filter((seat) => !(seats[seat].consent && seats[seat].consent.record)).map(
    (seat) => seats[seat].name,
  );
  if (noConsent.length) {
    return t("console.waiting_consent", { names: noConsent.join(", ") });
  }
  return null;
}

function renderRecording() {
  const state = view.state;
  const canStart = view.takeOpen;
  show($("#start-button"), canStart);
  show($("#pause-button"), state === "recording");
  show($("#resume-button"), state === "paused");
  show($("#stop-button"), isLive());
  const hint = $("#start-hint");
  if (canStart) {
    hint.textContent = startBlockers() || t("console.ready");
  } else if (state === "stopped") {
    hint.textContent = t("console.stopped_hint");
  } else if (state === "paused") {
    hint.textContent = t("console.paused_hint");
  } else {
    hint.textContent = "";
  }
  hint.dataset.state = state;
  renderFinalize();
  const transcript = view.snapshot.recording.transcript;
  const progress = transcript ? transcriptStatusText(transcript) : "";
  show($("#transcript-progress"), Boolean(progress));
  $("#transcript-progress").textContent = progress ? t("console.transcript", { state: progress }) : "";
  if (page.lastState !== null && page.lastState !== state) {
    $("#announcer").textContent = t(`rec.${state}`);
  }
  page.lastState = state;
}

/** Where the take's files are, with the recording's length and, once ready, its page
 * for staff. */
function renderFinalize() {
  if (!page.finalizeNodes) {
    page.finalizeNodes = drawFinalize($("#finalize-box"));
  }
  const nodes = page.finalizeNodes;
  if (!view.renderFinalize(nodes)) {
    return;
  }
  const info = view.finalization;
  const recording = view.snapshot.recording;
  const length = t("finalize.length", { time: formatClock(view.snapshot.timer.elapsed_s) });
  if (info.status === "ready") {
    const href = `/staff/recordings/${encodeURIComponent(recording.id)}`;
    const link = nodes.extra.querySelector("a");
    if (!link || link.getAttribute("href") !== href || link.textContent !== t("finalize.staff_link")) {
      nodes.extra.replaceChildren(
        el("span", { text: `${length} ` }),
        el("a", { text: t("finalize.staff_link"), attrs: { href, target: "_blank", rel: "noopener" } }),
      );
    }
  } else if (info.status === "failed") {
    setText(nodes.extra, t("finalize.console_failed_id", { id: recording.id }));
  } else {
    setText(nodes.extra, length);
  }
}

/** Why a control is not usable now, in the reason line it points to (aria-describedby);
 * empty (and hidden) when it is. */
function setReason(selector, text) {
  setText($(selector), text || "");
}

function cueReason() {
  if (isLive()) {
    return "";
  }
  return view.takeOpen ? t("console.reason_cue_start") : t("console.reason_finished");
}

function renderCue() {
  const snap = view.snapshot;
  const node = $("#cue-text");
  node.textContent = snap.cue ? textOf(snap.cue.question_id) : t("console.no_cue");
  node.dataset.empty = snap.cue ? "false" : "true";
  const ended = !isLive() && !view.takeOpen;
  const next = ended ? null : nextQuestionId();
  const button = $("#next-button");
  button.textContent = snap.cue ? t("console.next") : t("console.first");
  button.disabled = !isLive() || !next;
  let reason = cueReason();
  if (!reason && !next) {
    reason = agreedList().length ? t("console.no_next") : t("console.reason_no_agreed");
  }
  setReason("#next-reason", button.disabled ? reason : "");
  // After stop there is nothing "up next": the conversation is over.
  const preview = $("#next-preview");
  show(preview, !ended && Boolean(next));
  setText(preview, next && !ended ? t("console.up_next", { question: textOf(next) }) : "");
  preview.dataset.question = next || "";
  const seq = snap.cue ? snap.cue.seq : null;
  if (page.lastCueSeq !== undefined && seq !== page.lastCueSeq && snap.cue) {
    $("#announcer").textContent = t("live.cue_announce", { question: textOf(snap.cue.question_id) });
  }
  page.lastCueSeq = seq;
}

function renderAgreed() {
  const snap = view.snapshot;
  const list = $("#agreed-editor");
  const byId = questionsById();
  const agreed = agreedList().filter((id) => byId.has(id));
  const cued = new Set(snap.cues.map((cue) => cue.question_id));
  const current = snap.cue ? snap.cue.question_id : null;
  const editable = view.state !== "stopped" || view.takeOpen;
  keepFocus(list, () => {
    const items = agreed.map((id, index) => {
      const text = textOf(id);
      const button = (key, label, action, disabled = false, extra = "", describedBy = null) =>
        el("button", {
          text: t(key),
          className: `small ${extra}`.trim(),
          attrs: {
            type: "button",
            "aria-label": t(label, { question: text }),
            "aria-describedby": describedBy,
            disabled: disabled || !editable,
          },
          dataset: { focusKey: `${key}:${id}` },
          on: { click: action },
        });
      const item = el("li", { className: "agreed-item", dataset: { question: id } }, [
        el("span", { className: "agreed-text", text }),
        el("span", { className: "agreed-buttons" }, [
          button("console.cue", "console.cue_label", () => cue(id), !isLive(), "primary", "cue-reason"),
          button("console.up", "console.up_label", () => move(index, -1), index === 0),
          button("console.down", "console.down_label", () => move(index, 1), index === agreed.length - 1),
          button("console.remove", "console.remove_label", () => remove(id)),
        ]),
      ]);
      if (id === current) {
        item.setAttribute("aria-current", "true");
        item.classList.add("current");
      } else if (cued.has(id)) {
        item.classList.add("done");
      }
      return item;
    });
    list.replaceChildren(...items);
  });
  show($("#agreed-empty"), agreed.length === 0);
  setReason("#cue-reason", agreed.length ? cueReason() : "");
  const picked = bothPicked();
  const usePicks = $("#use-picks");
  usePicks.disabled = !editable || picked.every((id) => agreed.includes(id));
  let picksReason = "";
  if (!editable) {
    picksReason = t("console.reason_finished");
  } else if (picked.length === 0) {
    picksReason = t("console.reason_no_picks");
  } else if (usePicks.disabled) {
    picksReason = t("console.reason_picks_in");
  }
  setReason("#picks-reason", picksReason);
}

function bothPicked() {
  const seats = view.snapshot.seats;
  const a = new Set(seats.a.chosen || []);
  const b = new Set(seats.b.chosen || []);
  return view.snapshot.questions.map((q) => q.id).filter((id) => a.has(id) && b.has(id));
}

function renderBank() {
  const snap = view.snapshot;
  const container = $("#bank-list");
  const seats = snap.seats;
  const chosenBy = (id) =>
    PARTICIPANTS.filter((seat) => (seats[seat].chosen || []).includes(id)).map((seat) => seats[seat].name);
  const editable = view.state !== "stopped" || view.takeOpen;
  const agreed = agreedList();
  keepFocus(container, () => {
    const item = (question) => {
      const id = question.id;
      const text = textOf(id);
      const inList = agreed.includes(id);
      const names = chosenBy(id);
      return el("li", { className: "bank-item", dataset: { question: id } }, [
        el("span", { className: "bank-text", text }),
        el("span", {
          className: "bank-picks",
          text: names.length ? t("console.picked_by", { names: names.join(", ") }) : "",
          dataset: { count: String(names.length) },
        }),
        el("span", { className: "agreed-buttons" }, [
          inList
            ? el("span", { className: "in-list", text: t("console.in_list") })
            : el("button", {
                text: t("console.add"),
                className: "small",
                attrs: { type: "button", "aria-label": t("console.add_label", { question: text }), disabled: !editable },
                dataset: { focusKey: `add:${id}` },
                on: { click: () => add(id) },
              }),
          el("button", {
            text: t("console.cue"),
            className: "small",
            attrs: {
              type: "button",
              "aria-label": t("console.cue_label", { question: text }),
              "aria-describedby": "cue-reason",
              disabled: !isLive(),
            },
            dataset: { focusKey: `bankcue:${id}` },
            on: { click: () => cue(id) },
          }),
        ]),
      ]);
    };
    container.replaceChildren(...themeGroups(snap.questions, "bank", item));
  });
}

function renderMarkers() {
  const snap = view.snapshot;
  $("#marker-button").disabled = !isLive();
  $("#marker-label").disabled = !isLive();
  setReason(
    "#marker-reason",
    isLive() ? "" : t(view.takeOpen ? "markers.reason_start" : "markers.reason_finished"),
  );
  const items = snap.markers
    .slice()
    .reverse()
    .map((marker) =>
      el("li", {}, [
        el("span", { className: "time", text: formatClock(marker.rec_time) }),
        el("span", { text: marker.label }),
      ]),
    );
  $("#marker-list").replaceChildren(...items);
}

function renderNotes() {
  const items = (view.snapshot.notes || [])
    .slice()
    .reverse()
    .map((note) =>
      el("li", {}, [
        el("span", {
          className: "time",
          text:
            note.rec_time === null
              ? formatTimeOfDay(note.at)
              : t("notes.at_recording", { time: formatClock(note.rec_time) }),
        }),
        el("span", { className: "note-text", text: note.text }),
      ]),
    );
  $("#note-list").replaceChildren(...items);
}

function tickLevels() {
  if (view.snapshot) {
    for (const seat of SEATS) {
      const nodes = page.seatNodes[seat];
      const connected = view.snapshot.seats[seat].connected;
      setMeter(nodes.meter, connected ? view.seatLevel(seat) : 0);
      const stats = connected ? view.seatStats(seat) : null;
      const quality = connectionQuality(stats);
      const text = quality
        ? t("console.quality", {
            quality: t(`quality.${quality}`),
            loss: Math.round((stats.loss || 0) * 100),
            jitter: Math.round(stats.jitter_ms || 0),
            rtt: stats.rtt_ms === null || stats.rtt_ms === undefined ? "–" : Math.round(stats.rtt_ms),
          })
        : t("console.quality_unknown");
      if (nodes.quality.textContent !== text) {
        nodes.quality.textContent = text;
      }
      nodes.quality.dataset.quality = quality || "unknown";
    }
  }
  requestAnimationFrame(tickLevels);
}

// -- actions ------------------------------------------------------------------------

async function act(statusNode, request) {
  if (page.busy) {
    return { ok: false, error: { code: "busy" } };
  }
  page.busy = true;
  try {
    const ack = await request();
    statusNode.textContent = ack.ok ? "" : errorText(ack.error);
    return ack;
  } finally {
    page.busy = false;
  }
}

async function cue(id) {
  await act($("#cue-status"), () => client.cue(id));
}

function cueNext() {
  const next = nextQuestionId();
  if (next && isLive() && !page.busy) {
    cue(next);
  }
}

async function setAgreed(ids) {
  page.pendingAgreed = ids;
  page.agreedRequests += 1;
  renderAgreed();
  renderBank();
  const ack = await client.choose(ids);
  page.agreedRequests -= 1;
  if (page.agreedRequests === 0) {
    page.pendingAgreed = null;
  }
  $("#agreed-status").textContent = ack.ok ? "" : errorText(ack.error);
  view.render();
}

function move(index, delta) {
  const ids = agreedList().slice();
  const [id] = ids.splice(index, 1);
  ids.splice(index + delta, 0, id);
  setAgreed(ids);
}

function remove(id) {
  setAgreed(agreedList().filter((other) => other !== id));
}

function add(id) {
  setAgreed([...agreedList(), id]);
}

function usePicks() {
  const agreed = agreedList().slice();
  for (const id of bothPicked()) {
    if (!agreed.includes(id)) {
      agreed.push(id);
    }
  }
  setAgreed(agreed);
}

async function recording(action) {
  const status = $("#recording-status");
  if (action === "stop") {
    const ok = await confirmDialog({
      title: t("console.stop_title"),
      body: t("console.stop_body"),
      confirm: t("console.stop_confirm"),
      cancel: t("console.stop_cancel"),
      danger: true,
    });
    if (!ok) {
      return;
    }
  }
  const hadFocus = document.activeElement === $(`#${action}-button`) || action === "stop";
  const ack = await act(status, () => client.recording(action));
  if (!ack.ok && ack.error && ack.error.code === "precondition_failed") {
    status.textContent = startBlockers() || errorText(ack.error);
  }
  if (ack.ok && hadFocus) {
    // The pressed button goes away with the state: keep keyboard focus in the controls.
    const follow = { start: "#pause-button", pause: "#resume-button", resume: "#pause-button" }[action];
    await waitForState(action);
    const target = follow ? $(follow) : $("#next-button");
    if (target && !target.hidden) {
      target.focus();
    } else {
      $("#recording-title").setAttribute("tabindex", "-1");
      $("#recording-title").focus();
    }
  }
}

/** Resolves once the snapshot shows the state an action leads to (or after 2 s). */
function waitForState(action) {
  const wanted = { start: "recording", pause: "paused", resume: "recording", stop: "stopped" }[action];
  return new Promise((resolve) => {
    const started = Date.now();
    const check = () => {
      if (view.state === wanted || Date.now() - started > 2000) {
        resolve();
      } else {
        setTimeout(check, 20);
      }
    };
    check();
  });
}

async function addMarker(event) {
  if (event) {
    event.preventDefault();
  }
  if (!isLive()) {
    return;
  }
  const input = $("#marker-label");
  const label = input.value.trim() || t("markers.default_label");
  const ack = await client.marker(label);
  const status = $("#marker-status");
  if (ack.ok) {
    input.value = "";
    status.textContent = t("markers.added", { time: formatClock(ack.marker.rec_time) });
  } else {
    status.textContent = errorText(ack.error);
  }
}

async function saveNote(event) {
  event.preventDefault();
  const input = $("#note-text");
  const text = input.value.trim();
  if (!text) {
    return;
  }
  const ack = await client.note(text);
  const status = $("#note-status");
  if (ack.ok) {
    input.value = "";
    status.textContent = t("notes.saved");
  } else {
    status.textContent = errorText(ack.error);
  }
}

function timerElapsed(now) {
  const timer = view.snapshot.timer;
  return timer.elapsed_s + (timer.running ? Math.max(0, now - timer.server_time) : 0);
}

// Keys that act without leaving the conversation: N cues the next question, M places a
// marker (with the label typed, else the default one).
const KEYS = { n: () => cueNext(), m: () => addMarker() };

function onKey(event) {
  const action = KEYS[(event.key || "").toLowerCase()];
  if (!action) {
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
    return;
  }
  const target = event.target;
  const typing =
    target instanceof HTMLInputElement ||
    target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement ||
    (target instanceof HTMLElement && target.isContentEditable);
  if (typing || document.querySelector("dialog[open]")) {
    return;
  }
  event.preventDefault();
  action();
}

// -- start ----------------------------------------------------------------------------

async function main() {
  await view.init();
  buildSeatCards();
  client.onCaptureProgress = (progress) => {
    page.capture = progress;
    if (view.snapshot) {
      renderSeats();
    }
  };
  view.startMicrophone();

  $("#start-button").addEventListener("click", () => recording("start"));
  $("#pause-button").addEventListener("click", () => recording("pause"));
  $("#resume-button").addEventListener("click", () => recording("resume"));
  $("#stop-button").addEventListener("click", () => recording("stop"));
  $("#next-button").addEventListener("click", cueNext);
  $("#use-picks").addEventListener("click", usePicks);
  $("#marker-form").addEventListener("submit", addMarker);
  $("#note-form").addEventListener("submit", saveNote);
  document.addEventListener("keydown", onKey);
  requestAnimationFrame(tickLevels);
  view.start();
}

main();
