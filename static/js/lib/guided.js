// The self-guided room's own parts of the participant page: the guided introduction
// shown before joining, and the controls either person uses to run the conversation
// (start, pause, resume, stop with a confirmation, the next question, a marker and the
// question bank). There is no facilitator: the server lets both seats do these
// (server/room/permissions.py).

import { formatClock } from "./format.js";
import { t } from "./i18n.js";
import { questionText, themeGroups } from "./questions.js";
import { $, confirmDialog, el, errorText, keepFocus, setText, show } from "./ui.js";

// The introduction is shown once per tab and seat link (a reload goes straight in).
const INTRO_KEY = `storyroom.guidedIntro.${location.pathname}`;

/** A self-guided seat's link opens the room page at /together/<session>. */
export function onTogetherLink(loc = window.location) {
  return loc.pathname.startsWith("/together/");
}

/** On a /together/ link, show the guided introduction and resolve once the person
 * presses "join"; elsewhere (or when already seen in this tab) resolve at once. */
export function guidedIntro() {
  let seen = false;
  try {
    seen = sessionStorage.getItem(INTRO_KEY) === "1";
  } catch {
    // without storage the introduction shows on every load
  }
  if (!onTogetherLink() || seen) {
    return Promise.resolve();
  }
  const intro = $("#guided-intro");
  document.body.dataset.phase = "intro";
  show(intro, true);
  $("#guided-join").focus();
  return new Promise((resolve) => {
    $("#guided-join").addEventListener(
      "click",
      () => {
        try {
          sessionStorage.setItem(INTRO_KEY, "1");
        } catch {
          // remembered for this page only
        }
        show(intro, false);
        document.body.dataset.phase = "loading";
        resolve();
      },
      { once: true },
    );
  });
}

/** The next question: the first in the bank after the current one not yet asked, else
 * the first not yet asked at all. */
function nextQuestionId(snap) {
  const ids = snap.questions.map((q) => q.id);
  const asked = new Set(snap.cues.map((cue) => cue.question_id));
  const from = snap.cue ? ids.indexOf(snap.cue.question_id) + 1 : 0;
  return ids.slice(from).find((id) => !asked.has(id)) || ids.find((id) => !asked.has(id)) || null;
}

export class GuidedControls {
  /** `view` is the page's RoomView. */
  constructor(view) {
    this.view = view;
    this.busy = false;
    $("#guided-start").addEventListener("click", () => this.recording("start"));
    $("#guided-pause").addEventListener("click", () => this.recording("pause"));
    $("#guided-resume").addEventListener("click", () => this.recording("resume"));
    $("#guided-stop").addEventListener("click", () => this.recording("stop"));
    $("#guided-next").addEventListener("click", () => {
      const next = nextQuestionId(this.view.snapshot);
      if (next) {
        this.cue(next);
      }
    });
    $("#guided-marker").addEventListener("click", () => this.marker());
  }

  get live() {
    return this.view.state === "recording" || this.view.state === "paused";
  }

  /** Why Start cannot be pressed yet, in words; "" when it can. */
  startBlocker() {
    const seats = this.view.snapshot.seats;
    const absent = ["a", "b"].filter((seat) => !seats[seat].connected);
    if (absent.length) {
      return t("guided.reason_waiting", { names: absent.map((s) => seats[s].name).join(", ") });
    }
    const unconsented = ["a", "b"].filter((seat) => !(seats[seat].consent && seats[seat].consent.record));
    if (unconsented.length) {
      return t("guided.reason_consent", { names: unconsented.map((s) => seats[s].name).join(", ") });
    }
    return "";
  }

  render() {
    const view = this.view;
    const snap = view.snapshot;
    const state = view.state;
    const open = view.takeOpen;
    show($("#guided-controls"), open || this.live);
    show($("#guided-start"), open);
    show($("#guided-pause"), state === "recording");
    show($("#guided-resume"), state === "paused");
    show($("#guided-stop"), this.live);
    // the questions come with the recording: before it, the setup steps come first
    show($("#guided-live-buttons"), this.live);
    show($("#guided-bank-box"), this.live);
    const blocker = open ? this.startBlocker() : "";
    $("#guided-start").disabled = Boolean(blocker);
    $("#guided-next").textContent = t(snap.cue ? "guided.next" : "guided.first");
    const next = nextQuestionId(snap);
    $("#guided-next").disabled = !this.live || !next;
    $("#guided-marker").disabled = !this.live;
    let reason = blocker;
    if (!reason && open) {
      reason = t("guided.reason_start");
    } else if (this.live && snap.timer.limit_s) {
      reason = t("guided.limit", { time: formatClock(snap.timer.limit_s) });
    }
    setText($("#guided-reason"), reason);
    this.renderBank();
  }

  renderBank() {
    const snap = this.view.snapshot;
    const asked = new Set(snap.cues.map((cue) => cue.question_id));
    const current = snap.cue ? snap.cue.question_id : null;
    const container = $("#guided-bank");
    keepFocus(container, () => {
      const item = (question) => {
        const text = questionText(question, snap.session.language);
        const node = el("li", { className: "bank-item", dataset: { question: question.id } }, [
          el("span", { className: "bank-text", text }),
          el("button", {
            text: t("guided.ask"),
            className: "small",
            attrs: {
              type: "button",
              "aria-label": t("guided.ask_label", { question: text }),
              "aria-describedby": "guided-reason",
              disabled: !this.live,
            },
            dataset: { focusKey: `ask:${question.id}` },
            on: { click: () => this.cue(question.id) },
          }),
        ]);
        if (question.id === current) {
          node.setAttribute("aria-current", "true");
          node.classList.add("current");
        } else if (asked.has(question.id)) {
          node.classList.add("done");
        }
        return node;
      };
      container.replaceChildren(...themeGroups(snap.questions, "bank", item));
    });
  }

  async act(request) {
    if (this.busy) {
      return { ok: false };
    }
    this.busy = true;
    try {
      const ack = await request();
      setText($("#guided-status"), ack.ok ? "" : errorText(ack.error));
      return ack;
    } finally {
      this.busy = false;
    }
  }

  cue(id) {
    return this.act(() => this.view.client.cue(id));
  }

  async marker() {
    const ack = await this.act(() => this.view.client.marker(t("markers.default_label")));
    if (ack.ok) {
      setText($("#guided-status"), t("markers.added", { time: formatClock(ack.marker.rec_time) }));
    }
  }

  async recording(action) {
    if (action === "stop") {
      const ok = await confirmDialog({
        title: t("guided.stop_title"),
        body: t("guided.stop_body"),
        confirm: t("guided.stop_confirm"),
        cancel: t("guided.stop_cancel"),
        danger: true,
      });
      if (!ok) {
        return;
      }
    }
    await this.act(() => this.view.client.recording(action));
  }
}
