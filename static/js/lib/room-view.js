// What the participant page and the facilitator console share on screen: the header
// (recording and connection indicators, language), the banner, the timer, the seat's
// own microphone, the other seats' audio and their levels. The page modules add their
// own parts through render().

import { StreamProbe } from "./audio.js";
import { Capture } from "./capture.js";
import { formatClock } from "./format.js";
import { chosenLanguage, language, onLanguageChange, setLanguage, t } from "./i18n.js";
import { MicPanel, rawAudioRequested } from "./microphone.js";
import { RoomClient, sessionIdFromLocation, timerAt, tokenFromLocation } from "./room-client.js";
import { drawTopbar, startLanguage } from "./topbar.js";
import { $, el, setText, show } from "./ui.js";

const LEVELS_FRESH_S = 1.5;
// Why the server may stop a recording by itself (snapshot recording.stop_reason), in
// the words of each page.
const STOP_REASON_KEYS = {
  room: {
    disk_full: "stopped.room_disk_full",
    write_failed: "stopped.room_write_failed",
    server_restart: "stopped.room_server_restart",
    time_limit: "stopped.room_time_limit",
  },
  console: {
    disk_full: "stopped.console_disk_full",
    write_failed: "stopped.console_write_failed",
    server_restart: "stopped.console_server_restart",
  },
};
// A take stopped for this reason is not the end: the next take may start.
const RESTART = "server_restart";

/** A status indicator of the top bar: `#{name}-indicator` with a dot and `#{name}-label`. */
function indicator(name, state) {
  const attrs = { id: `${name}-indicator`, role: "status" };
  return el("div", { className: `${name}-indicator`, attrs, dataset: { state } }, [
    el("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
    el("span", { attrs: { id: `${name}-label` } }),
  ]);
}

/** The top bar (the session's title, the recording and connection indicators) and, under
 * it, the banner for what needs people's attention. */
function drawHeader() {
  const header = drawTopbar({
    heading: el("span", { className: "session-title", attrs: { id: "session-title" } }),
    status: [indicator("rec", "idle"), indicator("conn", "connecting")],
  });
  header.after(
    el("div", { className: "banner", attrs: { id: "banner", role: "alert", hidden: true } }, [
      el("p", { attrs: { id: "banner-text" } }),
      el("button", { attrs: { type: "button", id: "banner-action", hidden: true } }),
    ]),
    // how much of this browser's own copy of the take the server has, after stop
    el("p", { className: "capture-status", attrs: { id: "capture-status", role: "status", hidden: true } }),
  );
}

/** The box that says where the recording's files are (`.finalize`): a title, a progress
 * bar with the stage while they are prepared, and a line on what it means. Filled by
 * RoomView.renderFinalize(). */
export function drawFinalize(container) {
  const nodes = {
    box: container,
    title: el("p", { className: "finalize-title", attrs: { role: "status" } }),
    progress: el("progress", { className: "finalize-progress", attrs: { max: "100", value: "0" } }),
    stage: el("p", { className: "finalize-stage" }),
    body: el("p", { className: "finalize-body" }),
    extra: el("p", { className: "finalize-extra" }),
  };
  container.replaceChildren(nodes.title, nodes.progress, nodes.stage, nodes.body, nodes.extra);
  return nodes;
}

export class RoomView {
  /** `page` is "room" (participants) or "console" (the facilitator). */
  constructor({ render, page }) {
    this.page = page;
    this.sessionId = sessionIdFromLocation();
    this.token = tokenFromLocation();
    this.client = new RoomClient({ token: this.token, sessionId: this.sessionId });
    this.capture = new Capture({ token: this.token, client: this.client });
    this.pageRender = render;
    this.snapshot = null;
    this.banner = null; // {key, vars, kind, actionKey, action}
    this.muted = false;
    this.mic = null;
    this.levels = { receivedAt: 0, levels: {}, stats: {} };
    this.probes = new Map();
    this.ownSeat = null;
    this.stopReasonShown = null; // recording id whose stop reason the banner told
    this.captureSaving = false; // this page still sends some of the last take's capture
    this.stopBanner = null; // that banner, while the reconnecting one stands in for it
    // For diagnostics from the browser console (and the tests).
    window.storyroom = { client: this.client, view: this, capture: this.capture };
  }

  get state() {
    return this.snapshot ? this.snapshot.recording.state : "idle";
  }

  /** Draw the header, banner and timer, load the language, wire the client; call
   * start() once the page is built. */
  async init() {
    drawHeader();
    this.drawTimer();
    await startLanguage(this.sessionId);
    onLanguageChange(() => this.render());

    const client = this.client;
    client.onSnapshot = async (snapshot) => {
      const first = this.snapshot === null;
      if (first && this.redirectForSeat(snapshot.you)) {
        return;
      }
      this.snapshot = snapshot;
      this.ownSeat = snapshot.you;
      this.noteStopReason(snapshot.recording);
      if (first && !chosenLanguage(this.sessionId) && snapshot.session.language !== language()) {
        await setLanguage(snapshot.session.language); // renders
        return;
      }
      this.render();
    };
    client.onConnectionState = (state) => {
      if (state === "reconnecting") {
        if (this.banner && this.banner.stopReason) {
          this.stopBanner = this.banner; // shown again once the server is back
        }
        this.banner = { key: "conn.banner_reconnecting", kind: "warning" };
      } else if (state === "connected" && this.banner && this.banner.key === "conn.banner_reconnecting") {
        this.banner = this.stopBanner;
        this.stopBanner = null;
      }
      if (state === "connected") {
        this.capture.wake(); // the network is back: uploads need not wait for their back-off
      }
      this.render();
    };
    client.onAudioState = () => this.render();
    client.onRemoteTrack = (seat, stream) => this.remoteAudio(seat, stream);
    client.onLevels = (message) => {
      this.levels = {
        receivedAt: client.serverNow(),
        levels: message.levels || {},
        stats: message.stats || {},
      };
    };
    client.onClosed = (info) => {
      if (info.reason === "link_reissued") {
        // the old link opens nothing any more: no way back from this window
        this.banner = { key: "closed.link_reissued", kind: "warning" };
        this.render();
        return;
      }
      const key = info.reason === "replaced" ? "closed.replaced" : "closed.other";
      this.banner = {
        key,
        kind: "warning",
        actionKey: "closed.use_here",
        action: () => this.rejoin(),
      };
      this.render();
    };
    client.onRefused = ({ code }) => this.refuse(code);
    setInterval(() => this.renderTimer(), 250);
    this.capture.onChange = () => this.syncCapture();
    this.capture.init(); // not awaited: the page does not wait for storage to open
  }

  /** A facilitator's link opened as /room/ (or the other way round): go to the right page. */
  redirectForSeat(seat) {
    const wanted = seat === "facilitator" ? "console" : "room";
    if (!seat || wanted === this.page) {
      return false;
    }
    this.client.leave();
    const { search, hash } = window.location;
    window.location.replace(`/${wanted}/${encodeURIComponent(this.sessionId)}${search}${hash}`);
    return true;
  }

  /** The seat's own microphone (the #mic-panel; the participants' with its checks) and
   * the mute button: the track goes to the server once the microphone is on. */
  startMicrophone() {
    this.mic = new MicPanel($("#mic-panel"), {
      raw: rawAudioRequested(),
      checkup: this.page === "room",
      onTrack: (track, stream) => {
        this.client.setMicrophone(track, stream);
        this.render();
      },
    });
    onLanguageChange(() => this.mic.render());
    this.mic.startIfAllowed();
    $("#mute-button").addEventListener("click", () => this.setMuted(!this.muted));
  }

  start() {
    if (!this.token) {
      this.refuse("token_missing");
      return;
    }
    this.client.connect();
    this.render();
  }

  /** The server stopped the recording by itself (its disk filled, a write failed, it
   * is restarting): say so in the banner, once per recording, until a new take starts. */
  noteStopReason(recording) {
    const reason = recording.stop_reason;
    if (!reason) {
      if (this.banner && this.banner.stopReason) {
        this.banner = null;
      }
      return;
    }
    if (this.stopReasonShown === recording.id) {
      return;
    }
    this.stopReasonShown = recording.id;
    const keys = STOP_REASON_KEYS[this.page];
    this.banner = {
      key: keys[reason] || keys.write_failed,
      kind: reason === RESTART ? "warning" : "error",
      stopReason: reason,
    };
  }

  /** Where the latest take's files are once it stopped: null before, else `{status}`
   * ("finalizing", "ready" or "failed"; a queued job reads as "finalizing"), `percent`
   * (0-100) and the finalizer's `stage`. */
  get finalization() {
    const rec = this.snapshot ? this.snapshot.recording : null;
    if (!rec || !rec.finalize || this.takeOpen) {
      return null;
    }
    const f = rec.finalize;
    return {
      status: f.status === "queued" ? "finalizing" : f.status,
      percent: Math.max(0, Math.min(100, Math.round(f.percent || 0))),
      stage: f.status === "queued" ? "queued" : f.stage || null,
    };
  }

  /** Fill a drawFinalize() box in this page's words (`finalize.{page}_{status}_title`
   * and `_body`); false (and hidden) while there is nothing to say. */
  renderFinalize(nodes) {
    const info = this.finalization;
    show(nodes.box, Boolean(info));
    if (!info) {
      return false;
    }
    const prefix = `finalize.${this.page}_${info.status}`;
    nodes.box.dataset.status = info.status;
    setText(nodes.title, t(`${prefix}_title`));
    // "you can close this page" is not true while this page still sends its copy
    const waiting = this.captureSaving && this.page === "room" && info.status === "finalizing";
    setText(nodes.body, t(waiting ? "finalize.room_finalizing_body_capture" : `${prefix}_body`));
    const working = info.status === "finalizing";
    show(nodes.progress, working);
    show(nodes.stage, working);
    if (working) {
      nodes.progress.value = info.percent;
      nodes.progress.setAttribute("aria-label", t("finalize.progress_label"));
      nodes.progress.setAttribute("aria-valuetext", t("finalize.percent", { n: info.percent }));
      const stageKey = `finalize.stage_${info.stage || "queued"}`;
      const stage = t(stageKey);
      setText(
        nodes.stage,
        t("finalize.stage_line", { stage: stage === stageKey ? t("finalize.stage_working") : stage, n: info.percent }),
      );
    }
    return true;
  }

  /** No take is running and a new one may start: before the first, after an
   * interruption, after a take the server stopped for a restart (the server's
   * `Room.open_for_take`). */
  get takeOpen() {
    const state = this.state;
    if (state === "idle" || state === "interrupted") {
      return true;
    }
    return state === "stopped" && this.snapshot.recording.stop_reason === RESTART;
  }

  refuse(code) {
    document.body.dataset.phase = "refused";
    this.banner = { key: `refused.${code}`, kind: "error" };
    this.render();
  }

  leave() {
    this.client.leave();
    this.banner = { key: "left.message", actionKey: "left.rejoin", action: () => this.rejoin() };
    this.render();
  }

  rejoin() {
    this.banner = null;
    this.client.connect();
    this.render();
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.mic) {
      this.mic.setMuted(muted);
    }
    this.render();
  }

  render() {
    this.renderHeader();
    this.renderBanner();
    this.renderAudio();
    this.syncCapture();
    if (this.snapshot) {
      this.renderTimer();
    }
    this.pageRender();
  }

  renderHeader() {
    const indicator = $("#rec-indicator");
    indicator.dataset.state = this.state;
    $("#rec-label").textContent = t(`rec.${this.state}`);
    if (this.snapshot) {
      $("#session-title").textContent = this.snapshot.session.title;
      document.title = `${this.snapshot.session.title} · storyroom`;
    }
    const state = this.client.connectionState;
    const audio = this.client.audioState;
    let shown = state;
    if (state === "connected" && (audio === "failed" || audio === "connecting")) {
      shown = audio === "failed" ? "audio_failed" : "audio_connecting";
    }
    $("#conn-indicator").dataset.state = shown;
    $("#conn-label").textContent = t(`conn.${shown}`);
  }

  renderAudio() {
    const status = $("#audio-status");
    const audio = this.client.audioState;
    status.textContent = this.muted ? t("audio.muted") : t(`audio.${audio}`);
    status.dataset.state = this.muted ? "muted" : audio;
    const mute = $("#mute-button");
    mute.setAttribute("aria-pressed", this.muted ? "true" : "false");
    mute.disabled = !this.mic || this.mic.state !== "on";
  }

  /** The capture follows the room and the microphone; after stop, the page says how much
   * of it the server has ("Saving your recording: 80%"), then that it is saved. */
  syncCapture() {
    const snapshot = this.snapshot;
    // out of the room, the page records nothing; a dropped network is not out: the
    // capture is what keeps the voice while the live audio cannot
    const away = ["left", "closed", "refused"].includes(this.client.connectionState);
    this.capture.follow(away ? null : snapshot, this.client.micStream);
    const node = $("#capture-status");
    const rec = snapshot ? snapshot.recording : null;
    const live = rec && (rec.state === "recording" || rec.state === "paused");
    const info = rec && rec.id && !live ? this.capture.progress(rec.id) : null;
    show(node, Boolean(info));
    const saving = Boolean(info && !info.saved);
    if (saving !== this.captureSaving) {
      this.captureSaving = saving; // the end screen's words depend on it
      if (this.snapshot) {
        this.pageRender();
      }
    }
    if (!info) {
      return;
    }
    let state = "saving";
    let text = `${t("capture.saving", { n: info.percent })} ${t("capture.keep_open")}`;
    if (info.saved) {
      state = info.failed ? "failed" : "saved";
      text = t(info.failed ? "capture.failed" : "capture.saved");
    }
    node.dataset.state = state;
    setText(node, text);
  }

  renderBanner() {
    const banner = $("#banner");
    const info = this.banner;
    show(banner, Boolean(info));
    if (!info) {
      return;
    }
    banner.dataset.kind = info.kind || "info";
    $("#banner-text").textContent = t(info.key, info.vars || {});
    const action = $("#banner-action");
    show(action, Boolean(info.action));
    if (info.action) {
      action.textContent = t(info.actionKey);
      action.onclick = info.action;
    }
  }

  /** The timer's cells in #timer: elapsed and remaining, the target on the console. */
  drawTimer() {
    const cell = ([name, key]) =>
      el("div", { className: "timer-cell" }, [
        el("span", { className: "timer-label", i18n: key }),
        el("span", { className: "timer-value", text: "0:00", attrs: { id: `timer-${name}` } }),
      ]);
    const cells = [
      ["elapsed", "timer.elapsed"],
      ["remaining", "timer.remaining"],
    ];
    if (this.page === "console") {
      cells.push(["target", "timer.target"]);
    }
    $("#timer").replaceChildren(
      ...cells.map(cell),
      el("p", { className: "timer-warning", attrs: { id: "timer-warning", hidden: true } }),
    );
  }

  renderTimer() {
    if (!this.snapshot) {
      return;
    }
    const timer = timerAt(this.snapshot.timer, this.client.serverNow());
    if (!timer) {
      return;
    }
    $("#timer-elapsed").textContent = formatClock(timer.elapsed);
    $("#timer-remaining").textContent = timer.overtime
      ? `+${formatClock(-timer.remaining)}`
      : formatClock(timer.remaining);
    if (this.page === "console") {
      $("#timer-target").textContent = formatClock(timer.target);
    }
    let state = timer.running ? "running" : this.state;
    let text = "";
    if (timer.overtime) {
      state = "overtime";
      text = t("timer.overtime", { over: formatClock(-timer.remaining) });
    } else if (timer.warning !== null && this.state !== "idle") {
      state = "warning";
      text = t(timer.warning === 1 ? "timer.warning_one" : "timer.warning_other", {
        n: timer.warning,
      });
    }
    $("#timer").dataset.state = state;
    const warning = $("#timer-warning");
    show(warning, Boolean(text));
    if (warning.textContent !== text) {
      warning.textContent = text;
    }
  }

  /** Level 0..1 of a seat: the server's measure while it arrives, else our own. */
  seatLevel(seat) {
    const fresh = this.client.serverNow() - this.levels.receivedAt < LEVELS_FRESH_S;
    if (fresh && seat in this.levels.levels) {
      return this.levels.levels[seat];
    }
    if (seat === this.ownSeat) {
      return this.mic ? this.mic.level() : 0;
    }
    const probe = this.probes.get(seat);
    return probe ? probe.level() : 0;
  }

  seatStats(seat) {
    const fresh = this.client.serverNow() - this.levels.receivedAt < LEVELS_FRESH_S * 4;
    return fresh ? this.levels.stats[seat] || null : null;
  }

  remoteAudio(seat, stream) {
    const container = $("#remote-audio");
    let audio = container.querySelector(`audio[data-seat="${seat}"]`);
    if (!audio) {
      audio = el("audio", { attrs: { autoplay: true }, dataset: { seat } });
      container.append(audio);
    }
    audio.srcObject = stream;
    audio.play().catch(() => {
      // Autoplay refused until the person touches the page: ask for that touch.
      this.banner = {
        key: "audio.blocked",
        actionKey: "audio.blocked_action",
        action: () => {
          this.banner = null;
          for (const node of container.querySelectorAll("audio")) {
            node.play().catch(() => {});
          }
          this.render();
        },
      };
      this.render();
    });
    const old = this.probes.get(seat);
    if (old) {
      old.close();
    }
    this.probes.set(seat, new StreamProbe(stream));
  }
}
