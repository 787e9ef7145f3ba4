// The microphone check shared by the participant page and the facilitator console:
// permission (with help when it is refused), a device picker, a live level meter and a
// short "hear yourself" recording played back.

import { StreamProbe, audioContext, makeMeter, setMeter } from "./audio.js";
import { t, translatePage } from "./i18n.js";
import { el, show } from "./ui.js";

const SAMPLE_MS = 3000;

/** What this browser can do; `secure` counts http://localhost and 127.0.0.1 as secure. */
export function browserSupport() {
  return {
    secure: window.isSecureContext === true,
    webrtc: typeof window.RTCPeerConnection === "function",
    microphone: Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia),
    webaudio: typeof window.AudioContext === "function",
    recorder: typeof window.MediaRecorder === "function",
  };
}

/**
 * The getUserMedia constraints. Echo cancellation, noise suppression and automatic
 * gain are on for people; `?raw=1` turns them off (the tests' fake capture files must
 * arrive unprocessed).
 */
export function audioConstraints(deviceId, raw) {
  const constraints = {
    echoCancellation: !raw,
    noiseSuppression: !raw,
    autoGainControl: !raw,
    channelCount: 1,
  };
  if (deviceId) {
    constraints.deviceId = { exact: deviceId };
  }
  return { audio: constraints, video: false };
}

export function rawAudioRequested(loc = window.location) {
  return new URLSearchParams(loc.search).get("raw") === "1";
}

/** Why getUserMedia failed, as a catalogue key suffix. */
function failureKind(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "missing";
    case "NotReadableError":
    case "AbortError":
      return "busy";
    default:
      return "other";
  }
}

/** A `.field` of the panel, hidden until the microphone is on. */
function field(role, children) {
  return el("div", { className: "field", attrs: { hidden: true }, dataset: { role } }, children);
}

/**
 * The microphone panel, drawn in `root`: a button to turn it on, its state in words,
 * the device, a level meter and, with `checkup` (the participants' checks before the
 * conversation), a hint on the level, "hear yourself" and a tip on headphones. The
 * live track is reported through onTrack(track, stream).
 */
export class MicPanel {
  constructor(root, { raw = false, onTrack = () => {}, checkup = false } = {}) {
    this.root = root;
    this.raw = raw;
    this.onTrack = onTrack;
    this.stream = null;
    this.track = null;
    this.probe = null;
    this.muted = false;
    this.deviceId = "";
    this.state = "off"; // off | starting | on | failed
    this.failure = null;
    this.sampling = null; // null | recording | playing | done | failed

    this.status = el("p", { className: "status", attrs: { role: "status" }, dataset: { role: "status" } });
    this.help = el("p", { className: "help", attrs: { hidden: true }, dataset: { role: "help" } });
    this.enableButton = el("button", {
      className: "primary",
      attrs: { type: "button" },
      dataset: { role: "enable" },
    });
    this.deviceSelect = el("select", { attrs: { id: "mic-device" }, dataset: { role: "device" } });
    this.deviceField = field("device-field", [
      el("label", { i18n: "mic.device", attrs: { for: "mic-device" } }),
      this.deviceSelect,
    ]);
    this.meter = makeMeter("mic-meter-label");
    this.meter.dataset.role = "meter";
    this.meterField = field("meter-field", [
      el("span", { className: "label", i18n: "mic.level", attrs: { id: "mic-meter-label" } }),
      this.meter,
      checkup ? el("p", { className: "hint", i18n: "mic.level_hint" }) : null,
    ]);
    const parts = [this.status, this.help, this.enableButton, this.deviceField, this.meterField];
    this.playbackField = null;
    this.playbackButton = null;
    this.playbackStatus = null;
    if (checkup) {
      this.playbackButton = el("button", {
        i18n: "mic.hear_yourself",
        attrs: { type: "button" },
        dataset: { role: "playback" },
      });
      this.playbackStatus = el("p", {
        className: "hint",
        attrs: { role: "status" },
        dataset: { role: "playback-status" },
      });
      this.playbackField = field("playback-field", [this.playbackButton, this.playbackStatus]);
      parts.push(this.playbackField, el("p", { className: "tip", i18n: "mic.headphones" }));
    }
    root.replaceChildren(...parts);
    translatePage(root);
    this.playbackAudio = null;

    this.enableButton.addEventListener("click", () => this.start(this.deviceId));
    this.deviceSelect.addEventListener("change", () => this.start(this.deviceSelect.value));
    if (checkup) {
      this.playbackButton.addEventListener("click", () => this.hearYourself());
    }
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener("devicechange", () => this.listDevices());
    }
    this._tick = this._tick.bind(this);
    this.render();
  }

  /** Start at once when the browser already allows the microphone (no prompt then). */
  async startIfAllowed() {
    try {
      const status = await navigator.permissions.query({ name: "microphone" });
      if (status.state === "granted" && this.state === "off") {
        await this.start("");
      }
    } catch {
      // permissions.query("microphone") is not everywhere; the button stays.
    }
  }

  async start(deviceId) {
    if (this.state === "starting") {
      return;
    }
    if (!browserSupport().microphone) {
      this.state = "failed";
      this.failure = "unsupported";
      this.render();
      return;
    }
    audioContext();
    this.state = "starting";
    this.render();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(audioConstraints(deviceId, this.raw));
    } catch (error) {
      this.state = this.track ? "on" : "failed";
      this.failure = failureKind(error);
      this.render();
      return;
    }
    const old = this.stream;
    this.stream = stream;
    this.track = stream.getAudioTracks()[0];
    this.track.enabled = !this.muted;
    this.deviceId = (this.track.getSettings && this.track.getSettings().deviceId) || deviceId;
    this.track.addEventListener("ended", () => {
      if (this.stream === stream) {
        this.state = "failed";
        this.failure = "ended";
        this.render();
      }
    });
    if (this.probe) {
      this.probe.close();
    }
    this.probe = new StreamProbe(stream);
    this.state = "on";
    this.failure = null;
    this.onTrack(this.track, stream);
    if (old) {
      for (const track of old.getTracks()) {
        track.stop();
      }
    }
    await this.listDevices();
    this.render();
    if (!this._ticking) {
      this._ticking = true;
      requestAnimationFrame(this._tick);
    }
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.track) {
      this.track.enabled = !muted;
    }
  }

  level() {
    return this.probe && !this.muted ? this.probe.level() : 0;
  }

  async listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) {
      return;
    }
    const devices = (await navigator.mediaDevices.enumerateDevices()).filter(
      (device) => device.kind === "audioinput",
    );
    const options = devices.map((device, index) =>
      el("option", {
        text: device.label || t("mic.device_unnamed", { n: index + 1 }),
        attrs: { value: device.deviceId },
      }),
    );
    this.deviceSelect.replaceChildren(...options);
    if (devices.some((device) => device.deviceId === this.deviceId)) {
      this.deviceSelect.value = this.deviceId;
    }
  }

  /** Record a few seconds and play them back, so people hear how they sound. */
  async hearYourself() {
    if (!this.stream || this.sampling === "recording" || this.sampling === "playing") {
      return;
    }
    if (typeof MediaRecorder !== "function") {
      this.sampling = "failed";
      this.render();
      return;
    }
    const chunks = [];
    let recorder;
    try {
      recorder = new MediaRecorder(new MediaStream([this.track]));
    } catch {
      this.sampling = "failed";
      this.render();
      return;
    }
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) {
        chunks.push(event.data);
      }
    });
    const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve));
    this.sampling = "recording";
    this.render();
    recorder.start();
    setTimeout(() => recorder.state !== "inactive" && recorder.stop(), SAMPLE_MS);
    await stopped;

    const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
    if (this.playbackAudio) {
      URL.revokeObjectURL(this.playbackAudio.src);
      this.playbackAudio.remove();
    }
    const audio = el("audio", { className: "playback-audio", attrs: { preload: "auto" } });
    audio.src = URL.createObjectURL(blob);
    this.playbackAudio = audio;
    this.root.append(audio);
    this.sampling = "playing";
    this.render();
    const finished = new Promise((resolve) => {
      audio.addEventListener("ended", () => resolve("done"));
      audio.addEventListener("error", () => resolve("failed"));
      // A sample that cannot report its end (no audio output) still finishes.
      setTimeout(() => resolve("done"), SAMPLE_MS + 2000);
    });
    try {
      await audio.play();
      this.sampling = await finished;
    } catch {
      this.sampling = "failed";
    }
    this.render();
  }

  render() {
    const on = this.state === "on";
    show(this.enableButton, !on);
    this.enableButton.disabled = this.state === "starting";
    this.enableButton.textContent =
      this.state === "failed" ? t("mic.try_again") : t("mic.enable");
    show(this.deviceField, on);
    show(this.meterField, on);
    if (this.playbackField) {
      show(this.playbackField, on && typeof MediaRecorder === "function");
    }
    this.root.dataset.micState = this.state;

    let status;
    if (this.state === "on") {
      status = t("mic.on");
    } else if (this.state === "starting") {
      status = t("mic.starting");
    } else if (this.state === "failed") {
      status = t(`mic.failed_${this.failure}`);
    } else {
      status = t("mic.off");
    }
    this.status.textContent = status;

    const helpKey = this.failure ? `mic.help_${this.failure}` : null;
    show(this.help, Boolean(helpKey) && this.state === "failed");
    if (helpKey) {
      this.help.textContent = t(helpKey);
    }
    if (this.playbackStatus) {
      this.playbackStatus.textContent = this.sampling ? t(`mic.sample_${this.sampling}`) : "";
      this.playbackButton.disabled = this.sampling === "recording" || this.sampling === "playing";
    }
  }

  _tick() {
    if (this.state !== "on") {
      this._ticking = false;
      return;
    }
    setMeter(this.meter, this.level());
    requestAnimationFrame(this._tick);
  }
}
