// The protocol layer: one Socket.IO connection and one RTCPeerConnection per seat.
// No DOM here: pages follow it through the on* callbacks.
//
// Media contract (docs/protocol.md): one peer connection to the server with exactly
// three audio transceivers, in this order: our microphone (sendonly), then two
// recvonly ones; the full offer goes out after ICE gathering (no trickle ICE), and
// the answer's ack says which mid carries which other seat. After a network drop the
// Socket.IO connection comes back by itself and we build a fresh peer connection.

import { io } from "/vendor/socket.io.esm.min.js";

export const TOKEN_ERRORS = new Set(["token_missing", "token_invalid", "token_expired"]);

const ICE_GATHERING_TIMEOUT_MS = 4000;
const REQUEST_TIMEOUT_MS = 10000;
/** Offer refusals that say the server is at capacity (`server_full`: its room limit;
 * `no_media_ports`: its ICE port range is taken), not that this seat did wrong. */
const AUDIO_AT_CAPACITY = ["server_full", "no_media_ports"];
const AUDIO_RETRY_MS = [1000, 2000, 4000, 8000, 15000];
const SERVER_DISCONNECT_RETRY_MS = [1000, 2000, 5000, 10000];
const OFFSET_SAMPLES = 12;

/** The seat token from the join link's fragment (`#token=...`); never sent in a URL. */
export function tokenFromLocation(loc = window.location) {
  const params = new URLSearchParams(loc.hash.replace(/^#/, ""));
  return (params.get("token") || "").trim();
}

/** The session id from `/room/<id>` or `/console/<id>`. */
export function sessionIdFromLocation(loc = window.location) {
  const parts = loc.pathname.split("/").filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : "";
}

/**
 * The timer as it stands at server time `serverNow` (seconds), from a snapshot's
 * `timer` (elapsed_s measured at timer.server_time; it runs only while recording).
 */
export function timerAt(timer, serverNow) {
  if (!timer) {
    return null;
  }
  const ran = timer.running ? Math.max(0, serverNow - timer.server_time) : 0;
  const elapsed = timer.elapsed_s + ran;
  const remaining = timer.target_s - elapsed;
  let warning = null;
  for (const minutes of timer.warnings_min || []) {
    if (remaining <= minutes * 60) {
      warning = warning === null ? minutes : Math.min(warning, minutes);
    }
  }
  return {
    running: Boolean(timer.running),
    elapsed,
    remaining,
    target: timer.target_s,
    warning,
    overtime: remaining < 0,
  };
}

/** Connection states: connecting, connected, reconnecting, refused, closed, left. */
export class RoomClient {
  constructor({ token, sessionId }) {
    this.token = token;
    // In a cluster the proxy sends a room's connections to one node by this id; the
    // node that runs the room may ask for a pin to it (`wrong_node`).
    this.sessionId = sessionId;
    this.nodePin = null;
    this._nodeHops = 0;
    this.socket = null;
    this.snapshot = null;
    this.seat = null;
    this.connectionState = "idle";
    // Audio states: off (no microphone yet), connecting, connected, unavailable, failed.
    this.audioState = "off";
    this.audioError = null;
    this.pc = null;
    this.sender = null;
    this.mids = {};
    this.remoteStreams = new Map();
    this.micTrack = null;
    this.micStream = null;
    this.closedInfo = null;

    this._offsetSamples = [];
    this._clockOffset = 0;
    this._needsOffer = false;
    this._audioGeneration = 0;
    this._audioRetries = 0;
    this._audioTimer = null;
    this._serverRetries = 0;
    this._serverTimer = null;
    this._left = false;

    this.onSnapshot = () => {};
    this.onLevels = () => {};
    this.onConnectionState = () => {};
    this.onAudioState = () => {};
    this.onRemoteTrack = () => {};
    this.onClosed = () => {};
    this.onRefused = () => {};
    this.onCaptureProgress = () => {};
  }

  /** Server time now, in seconds, estimated from the snapshots' server_time. */
  serverNow() {
    return Date.now() / 1000 + this._clockOffset;
  }

  connect() {
    this._left = false;
    this.closedInfo = null;
    if (this.socket) {
      this.socket.connect();
      this._setConnection("connecting");
      return;
    }
    const socket = io({
      auth: { token: this.token },
      query: this.sessionId ? { session: this.sessionId } : {},
      transports: ["websocket"],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    this.socket = socket;
    this._setConnection("connecting");

    socket.on("connect", () => {
      this._serverRetries = 0;
      this._nodeHops = 0;
      this._needsOffer = true;
      this._setConnection("connected");
    });
    socket.on("disconnect", (reason) => this._disconnected(reason));
    socket.on("connect_error", (err) => {
      const code = err && err.data && err.data.code;
      if (TOKEN_ERRORS.has(code)) {
        this._setConnection("refused");
        this.onRefused({ code, message: err.message });
      } else if (code === "wrong_node" || code === "node_pin_invalid") {
        this._followNode(code === "wrong_node" ? err.data.node : null);
      } else if (!socket.active) {
        // Refused by the server for another reason: try again a little later.
        this._retryServer();
      } else {
        this._setConnection("reconnecting");
      }
    });
    socket.io.on("reconnect_attempt", () => {
      if (this.connectionState !== "refused") {
        this._setConnection("reconnecting");
      }
    });
    socket.on("room", (snapshot) => this._snapshot(snapshot));
    socket.on("closed", (info) => {
      this.closedInfo = info || { reason: "closed" };
      this.onClosed(this.closedInfo);
    });
    socket.on("media:levels", (levels) => this.onLevels(levels));
    socket.on("capture:progress", (progress) => this.onCaptureProgress(progress));
  }

  /** Leave the room: no reconnecting until connect() is called again. */
  leave() {
    this._left = true;
    this._stopAudio("off");
    if (this.socket) {
      this.socket.disconnect();
    }
    this._setConnection("left");
  }

  /**
   * Send an event and wait for its ack: `{ok: true, ...}` or
   * `{ok: false, error: {code, message}}`; never throws.
   */
  async request(event, payload) {
    if (!this.socket || !this.socket.connected) {
      return { ok: false, error: { code: "offline", message: "not connected" } };
    }
    try {
      const emitter = this.socket.timeout(REQUEST_TIMEOUT_MS);
      const ack =
        payload === undefined
          ? await emitter.emitWithAck(event)
          : await emitter.emitWithAck(event, payload);
      return ack && typeof ack === "object"
        ? ack
        : { ok: false, error: { code: "bad_ack", message: "unexpected answer" } };
    } catch {
      return { ok: false, error: { code: "timeout", message: "no answer from the server" } };
    }
  }

  consent(consent) {
    return this.request("consent", consent);
  }

  choose(ids) {
    return this.request("questions:choose", { ids });
  }

  cue(id) {
    return this.request("question:cue", { id });
  }

  recording(action) {
    return this.request(`recording:${action}`);
  }

  marker(label) {
    return this.request("marker", { label });
  }

  /** A private note of the facilitator's, kept on the server with its time. */
  note(text) {
    return this.request("note", { text });
  }

  /**
   * Our microphone. The first call starts the audio; later calls swap the track on
   * the existing sender without renegotiating.
   */
  setMicrophone(track, stream) {
    this.micTrack = track;
    this.micStream = stream;
    if (this.sender && this.pc && this.pc.connectionState !== "closed") {
      this.sender.replaceTrack(track).catch(() => this._scheduleAudio(0));
      return;
    }
    this._maybeStartAudio();
  }

  // -- internals ------------------------------------------------------------------

  _setConnection(state) {
    if (this.connectionState !== state) {
      this.connectionState = state;
      this.onConnectionState(state);
    }
  }

  _setAudio(state, error = null) {
    if (this.audioState !== state || this.audioError !== error) {
      this.audioState = state;
      this.audioError = error;
      this.onAudioState(state, error);
    }
  }

  _snapshot(snapshot) {
    const sample = snapshot.server_time - Date.now() / 1000;
    // Each sample is the true offset minus the delivery delay: the largest recent one
    // is the closest.
    this._offsetSamples.push(sample);
    if (this._offsetSamples.length > OFFSET_SAMPLES) {
      this._offsetSamples.shift();
    }
    this._clockOffset = Math.max(...this._offsetSamples);
    this.snapshot = snapshot;
    this.seat = snapshot.you || this.seat;
    this.onSnapshot(snapshot);
    this._maybeStartAudio();
  }

  _disconnected(reason) {
    this._stopAudio(this.micTrack ? "connecting" : "off");
    if (this._left) {
      this._setConnection("left");
    } else if (this.closedInfo) {
      this._setConnection("closed");
    } else if (reason === "io server disconnect") {
      // The server hung up without saying why (a restart, say): come back by ourselves.
      this._retryServer();
    } else {
      this._setConnection("reconnecting");
    }
  }

  /** Another node runs the room: reconnect pinned to it (`node` in the URL, which the
   * proxy routes on); a few hops at once, then the usual back-off. */
  _followNode(node) {
    this.nodePin = typeof node === "string" && node ? node : null;
    const query = { ...(this.socket.io.opts.query || {}) };
    if (this.nodePin) {
      query.node = this.nodePin;
    } else {
      delete query.node;
    }
    this.socket.io.opts.query = query;
    if (this._nodeHops < 3) {
      this._nodeHops += 1;
      this._setConnection("reconnecting");
      this.socket.connect();
    } else {
      this._nodeHops = 0;
      this._retryServer();
    }
  }

  _retryServer() {
    this._setConnection("reconnecting");
    clearTimeout(this._serverTimer);
    const delay =
      SERVER_DISCONNECT_RETRY_MS[Math.min(this._serverRetries, SERVER_DISCONNECT_RETRY_MS.length - 1)];
    this._serverRetries += 1;
    this._serverTimer = setTimeout(() => {
      if (!this._left && !this.closedInfo && this.socket && !this.socket.connected) {
        this.socket.connect();
      }
    }, delay);
  }

  _maybeStartAudio() {
    if (!this._needsOffer || !this.micTrack || !this.snapshot) {
      return;
    }
    if (!this.socket || !this.socket.connected) {
      return;
    }
    this._needsOffer = false;
    this._audioRetries = 0;
    this._startAudio();
  }

  _stopAudio(state) {
    this._audioGeneration += 1;
    clearTimeout(this._audioTimer);
    if (this.pc) {
      this.pc.ontrack = null;
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
    this.sender = null;
    this.mids = {};
    this.remoteStreams.clear();
    this._setAudio(state);
  }

  _scheduleAudio(delay) {
    clearTimeout(this._audioTimer);
    const generation = this._audioGeneration;
    this._audioTimer = setTimeout(() => {
      if (generation === this._audioGeneration && this.socket && this.socket.connected) {
        this._startAudio();
      }
    }, delay);
  }

  _retryAudio() {
    const delay = AUDIO_RETRY_MS[Math.min(this._audioRetries, AUDIO_RETRY_MS.length - 1)];
    this._audioRetries += 1;
    this._scheduleAudio(delay);
  }

  async _startAudio() {
    this._stopAudio("connecting");
    const generation = this._audioGeneration;
    const current = () => generation === this._audioGeneration;
    let pc;
    try {
      // This seat's own TURN credentials; "relay" sends all audio through TURN.
      const snapshot = this.snapshot || {};
      pc = new RTCPeerConnection({
        iceServers: snapshot.ice_servers || [],
        iceTransportPolicy: snapshot.ice_transport_policy === "relay" ? "relay" : "all",
      });
    } catch (err) {
      this._setAudio("failed", "no_webrtc");
      return;
    }
    this.pc = pc;
    const init = { direction: "sendonly" };
    if (this.micStream) {
      init.streams = [this.micStream];
    }
    this.sender = pc.addTransceiver(this.micTrack, init).sender;
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });

    pc.ontrack = (event) => {
      if (!current()) {
        return;
      }
      const mid = event.transceiver && event.transceiver.mid;
      const seat = this.mids[mid];
      if (!seat) {
        return;
      }
      const stream = new MediaStream([event.track]);
      this.remoteStreams.set(seat, stream);
      this.onRemoteTrack(seat, stream);
    };
    pc.onconnectionstatechange = () => {
      if (!current()) {
        return;
      }
      const state = pc.connectionState;
      if (state === "connected") {
        this._audioRetries = 0;
        this._setAudio("connected");
      } else if (state === "failed") {
        this._setAudio("failed", "ice_failed");
        this._retryAudio();
      } else if (state === "disconnected" || state === "connecting") {
        this._setAudio("connecting");
      }
    };

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
    } catch (err) {
      if (current()) {
        this._setAudio("failed", "offer_failed");
        this._retryAudio();
      }
      return;
    }
    if (!current()) {
      return;
    }
    const ack = await this.request("rtc:offer", {
      sdp: pc.localDescription.sdp,
      type: "offer",
    });
    if (!current()) {
      return;
    }
    if (!ack.ok) {
      const code = (ack.error && ack.error.code) || "failed";
      pc.close();
      this.pc = null;
      this.sender = null;
      if (AUDIO_AT_CAPACITY.includes(code)) {
        // the server has no room for more audio now; it may later, when a room ends
        this._setAudio("unavailable", code);
        this._retryAudio();
      } else {
        this._setAudio("failed", code);
        const passing = ["offline", "timeout", "internal", "offer_in_flight", "server_restarting", "wrong_node"];
        if (passing.includes(code)) {
          this._retryAudio();
        }
      }
      return;
    }
    this.mids = ack.mids || {};
    try {
      await pc.setRemoteDescription(ack.answer);
    } catch (err) {
      if (current()) {
        this._setAudio("failed", "answer_failed");
        this._retryAudio();
      }
    }
  }
}

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        done();
      }
    };
    // Send what we have if gathering stalls (an unreachable STUN server, say).
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
