// The seat's own recording of its microphone: while the room records, a MediaRecorder
// records the same stream the page sends, in ~1 s chunks kept in IndexedDB until the
// server confirms them (docs/protocol.md, "Browser capture"). Uploads go one request at
// a time, in order, with the seat's token, and back off on errors. They give way to the
// live audio while this page records a take: paced (a backlog drains at twice the
// capture's rate, not in a burst), and on an uplink too narrow for both (an upload's own
// throughput says so) they wait for the take to end. A page reload starts a new run;
// the runs a previous page left behind are sent first. No DOM here: the page shows
// `progress()`.

import { timerAt } from "./room-client.js";

const MIME_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"];
const BITRATE = 128000;
const TIMESLICE_MS = 1000;
const BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];
const DB_NAME = "storyroom-capture";
const KEEP_CLOSED_MS = 24 * 3600 * 1000;
const REQUEST_TIMEOUT_MS = 30000;
/** While a take is live: at least this long from one chunk upload's start to the next. */
const LIVE_PACE_MS = TIMESLICE_MS / 2;
/** An uplink on which an upload got less than this is too narrow to upload during a
 * take without crowding the live audio (the call's ~110 kbit/s plus the capture's 128):
 * measured by bench/capture_link.py. */
const NARROW_BPS = 4 * BITRATE;
/** Uploads at least this large tell the uplink's throughput (smaller ones, mostly RTT). */
const MEASURED_BYTES = 8000;
const LIVE_POLL_MS = 1000;
/** Answers after which retrying the same request cannot help. */
const RETRY_STATUSES = new Set([0, 408, 425, 429, 500, 502, 503, 504]);

/** The first recorder type this browser supports, or null (no capture then). */
export function captureMime() {
  if (typeof MediaRecorder === "undefined" || typeof indexedDB === "undefined" || !crypto.subtle) {
    return null;
  }
  return MIME_TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || null;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(data) {
  return hex(await crypto.subtle.digest("SHA-256", data));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// -- IndexedDB, as promises ---------------------------------------------------------

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function openDb() {
  const request = indexedDB.open(DB_NAME, 1);
  request.onupgradeneeded = () => {
    const db = request.result;
    db.createObjectStore("runs", { keyPath: "key" });
    db.createObjectStore("chunks", { keyPath: ["key", "seq"] });
  };
  return done(request);
}

/** Run `work(stores)` in one transaction over `names`; resolves once it committed. */
function transaction(db, names, mode, work) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(names, mode);
    const stores = Object.fromEntries(names.map((name) => [name, tx.objectStore(name)]));
    let result;
    Promise.resolve(work(stores)).then((value) => {
      result = value;
    }, reject);
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

const chunkRange = (key) => IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]);

export class Capture {
  constructor({ token, client }) {
    this.token = token;
    this.client = client;
    this.mime = captureMime();
    this.db = null;
    this.owner = null;
    this.live = null; // {key, recordingId, stream, recorder, writes}
    this.runs = []; // this seat's runs as stored, oldest first
    this.failures = 0;
    this.narrow = false; // this take's uploads have shown an uplink too narrow to share
    this.lastSend = 0;
    this._wake = false;
    this._pumping = false;
    this.onChange = () => {};
  }

  /** Open the store; the runs an earlier page left are ended (their recorder is gone)
   * and sent before anything new. */
  async init() {
    if (!this.mime || !this.token) {
      return;
    }
    try {
      this.owner = (await sha256(new TextEncoder().encode(this.token))).slice(0, 32);
      const db = await openDb();
      const now = Date.now();
      await transaction(db, ["runs", "chunks"], "readwrite", async ({ runs, chunks }) => {
        for (const run of await done(runs.getAll())) {
          if (run.owner !== this.owner) {
            continue;
          }
          if ((run.closed || run.abandoned) && now - run.createdAt > KEEP_CLOSED_MS) {
            runs.delete(run.key);
            chunks.delete(chunkRange(run.key));
          } else if (!run.ended) {
            runs.put({ ...run, ended: true });
          }
        }
      });
      this.db = db; // only now: a run this page starts is never taken for an earlier page's
      await this._reload();
    } catch {
      this.db = null; // no storage (a private window, say): the server's recording stands
    }
    this.wake();
  }

  /** Follow the room: record while it records, pause with it, stop at stop (or when
   * the microphone's stream changes: a new run then). A null snapshot means this page
   * is out of the room (it left, or another window took the seat): no recording. */
  follow(snapshot, stream) {
    if (!this.db) {
      return;
    }
    if (!snapshot) {
      if (this.live) {
        this._end(this.live);
      }
      return;
    }
    const rec = snapshot.recording;
    const live = rec.state === "recording" || rec.state === "paused";
    const current = this.live;
    if (current && (!live || current.recordingId !== rec.id || current.stream !== stream)) {
      this._end(current);
    }
    if (!this.live && rec.state === "recording" && stream) {
      this._start(snapshot, stream);
    }
    const recorder = this.live && this.live.recorder;
    if (recorder && rec.state === "paused" && recorder.state === "recording") {
      recorder.pause(); // a paused take records nothing
    } else if (recorder && rec.state === "recording" && recorder.state === "paused") {
      recorder.resume();
    }
  }

  /** Look for work now (after a reconnect, say) instead of at the next back-off. */
  wake() {
    this._wake = true;
    if (this.db && !this._pumping) {
      this._pump();
    }
  }

  /** How much of a take's capture the server has: null when this page recorded none;
   * else {percent, saved (nothing left to send), failed (some of it could not be sent),
   * recording (still being recorded here)}. */
  progress(recordingId) {
    const runs = this.runs.filter((run) => run.recordingId === recordingId);
    if (!runs.length) {
      return null;
    }
    const recorded = runs.reduce((sum, run) => sum + run.recorded, 0);
    const confirmed = runs.reduce((sum, run) => sum + run.confirmed, 0);
    return {
      percent: recorded ? Math.floor((100 * confirmed) / recorded) : 100,
      saved: runs.every((run) => run.closed || run.abandoned),
      failed: runs.some((run) => run.abandoned),
      recording: Boolean(this.live && this.live.recordingId === recordingId),
    };
  }

  // -- recording ----------------------------------------------------------------------

  _start(snapshot, stream) {
    let recorder;
    try {
      recorder = new MediaRecorder(stream, { mimeType: this.mime, audioBitsPerSecond: BITRATE });
    } catch {
      return;
    }
    const timer = timerAt(snapshot.timer, this.client.serverNow());
    const run = {
      key: `r${Date.now().toString(36)}${hex(crypto.getRandomValues(new Uint8Array(8)))}`,
      owner: this.owner,
      recordingId: snapshot.recording.id,
      mime: this.mime,
      recStart: timer ? Math.max(0, timer.elapsed) : 0,
      serverStart: this.client.serverNow(),
      createdAt: Date.now(),
      serverRun: null,
      recorded: 0,
      confirmed: 0,
      ended: false,
      closed: false,
      abandoned: false,
    };
    const live = { key: run.key, recordingId: run.recordingId, stream, recorder, seq: 0 };
    live.writes = Promise.resolve();
    // every write waits for the one before (the run is stored before its chunks), and
    // one that fails does not stop the ones after it
    const queue = (write) => {
      live.writes = live.writes.then(write).catch((err) => console.warn("capture: not stored", err));
    };
    live.queue = queue;
    recorder.ondataavailable = (event) => {
      if (!event.data || !event.data.size) {
        return;
      }
      const seq = live.seq;
      live.seq += 1;
      queue(() => this._addChunk(run.key, seq, event.data));
    };
    recorder.onstop = () => queue(() => this._update(run.key, { ended: true }));
    try {
      recorder.start(TIMESLICE_MS); // its first chunk comes a timeslice later, after the save
    } catch {
      return; // a stream it cannot record (its track ended): the next stream starts a run
    }
    queue(() => this._save(run));
    this.live = live;
    this.narrow = false; // a new take: measure the uplink anew
  }

  _end(live) {
    this.live = null;
    if (live.recorder.state !== "inactive") {
      live.recorder.stop(); // the last chunk comes, then onstop
    } else {
      live.queue(() => this._update(live.key, { ended: true }));
    }
  }

  async _save(run) {
    await transaction(this.db, ["runs"], "readwrite", ({ runs }) => runs.put(run));
    await this._reload();
  }

  async _addChunk(key, seq, blob) {
    await transaction(this.db, ["runs", "chunks"], "readwrite", async ({ runs, chunks }) => {
      chunks.put({ key, seq, blob });
      const run = await done(runs.get(key));
      runs.put({ ...run, recorded: Math.max(run.recorded, seq + 1) });
    });
    await this._reload();
    this.wake();
  }

  async _update(key, changes) {
    await transaction(this.db, ["runs"], "readwrite", async ({ runs }) => {
      const run = await done(runs.get(key));
      if (run) {
        runs.put({ ...run, ...changes });
      }
    });
    await this._reload();
    this.wake();
  }

  async _reload() {
    const all = await transaction(this.db, ["runs"], "readonly", ({ runs }) => done(runs.getAll()));
    this.runs = all.filter((run) => run.owner === this.owner).sort((x, y) => x.createdAt - y.createdAt);
    try {
      this.onChange();
    } catch (err) {
      // the page failed to show it; recording and uploading must go on all the same
      console.warn("capture: the page could not show its progress", err);
    }
  }

  // -- uploading ------------------------------------------------------------------------

  async _pump() {
    this._pumping = true;
    try {
      while (this._wake) {
        this._wake = false;
        for (;;) {
          const outcome = await this._step();
          if (outcome === "idle") {
            break;
          }
          if (outcome === "retry") {
            const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
            this.failures += 1;
            await sleep(delay);
          } else {
            this.failures = 0;
          }
        }
      }
    } finally {
      this._pumping = false;
    }
  }

  /** One request for the oldest run with something to send: "sent", "retry" or "idle". */
  async _step() {
    for (const run of this.runs) {
      if (run.closed || run.abandoned) {
        continue;
      }
      if (run.serverRun === null) {
        return this._open(run);
      }
      const chunk = await transaction(this.db, ["chunks"], "readonly", ({ chunks }) =>
        done(chunks.get(chunkRange(run.key))),
      );
      if (chunk) {
        return this._send(run, chunk);
      }
      if (run.ended) {
        return this._close(run);
      }
    }
    return "idle";
  }

  async _call(method, path, { json, blob, headers = {} } = {}) {
    const sent = { Authorization: `Bearer ${this.token}`, ...headers };
    let body;
    if (json !== undefined) {
      sent["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (blob !== undefined) {
      sent["Content-Type"] = "application/octet-stream";
      body = blob;
    }
    // a request that hangs (a dead network that never says so) is given up and retried
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(this._routed(path), {
        method,
        headers: sent,
        body,
        cache: "no-store",
        signal: abort.signal,
      });
      const answer = await response.json().catch(() => null);
      return { status: response.status, body: answer };
    } catch {
      return { status: 0, body: null };
    } finally {
      clearTimeout(timer);
    }
  }

  /** `path` with the room's session id (and node pin), which a cluster's proxy routes
   * on: the upload reaches the node that runs the room, as its Socket.IO does. */
  _routed(path) {
    const query = new URLSearchParams();
    if (this.client && this.client.sessionId) {
      query.set("session", this.client.sessionId);
      if (this.client.nodePin) {
        query.set("node", this.client.nodePin);
      }
    }
    const text = query.toString();
    return text ? `${path}${path.includes("?") ? "&" : "?"}${text}` : path;
  }

  _runsPath(run) {
    return `/api/capture/${encodeURIComponent(run.recordingId)}/runs`;
  }

  /** What an answer means for the run: "sent" (go on), "retry" (later) or "gave up". */
  async _failed(run, result) {
    if (RETRY_STATUSES.has(result.status)) {
      return "retry";
    }
    const code = result.body && result.body.error && result.body.error.code;
    if (code === "run_closed") {
      await this._update(run.key, { closed: true });
      return "sent";
    }
    // the server will not take this run (its take ended long ago, a chunk it refuses):
    // what arrived stays; the rest is dropped so it cannot block the runs after it
    await transaction(this.db, ["runs", "chunks"], "readwrite", async ({ runs, chunks }) => {
      chunks.delete(chunkRange(run.key));
      const stored = await done(runs.get(run.key));
      runs.put({ ...stored, abandoned: true, refusal: code || String(result.status) });
    });
    await this._reload();
    return "sent";
  }

  async _open(run) {
    const result = await this._call("POST", this._runsPath(run), {
      json: { mime: run.mime, rec_start: run.recStart, server_start: run.serverStart, key: run.key },
    });
    if (result.status === 200 || result.status === 201) {
      await this._update(run.key, { serverRun: result.body.run, confirmed: result.body.chunks });
      return "sent";
    }
    return this._failed(run, result);
  }

  /** While this page records a take, let the live audio go first: wait for the take to
   * end on a narrow uplink, else keep to the live pace. */
  async _giveWay() {
    while (this.live && this.narrow) {
      await sleep(LIVE_POLL_MS);
    }
    const wait = this.lastSend + LIVE_PACE_MS - performance.now();
    if (this.live && wait > 0) {
      await sleep(wait);
    }
  }

  async _send(run, chunk) {
    await this._giveWay();
    const data = await chunk.blob.arrayBuffer();
    const path = `${this._runsPath(run)}/${run.serverRun}/chunks/${chunk.seq}`;
    const headers = { "X-Chunk-Sha256": await sha256(data), "X-Capture-Recorded": String(run.recorded) };
    this.lastSend = performance.now();
    const result = await this._call("PUT", path, { blob: chunk.blob, headers });
    const seconds = (performance.now() - this.lastSend) / 1000;
    if (this.live && data.byteLength >= MEASURED_BYTES && (data.byteLength * 8) / seconds < NARROW_BPS) {
      this.narrow = true;
      console.info(`capture: uplink too narrow to upload during the take (${Math.round((data.byteLength * 8) / seconds / 1000)} kbit/s); after it`);
    }
    if (result.status === 200 || result.status === 201) {
      await transaction(this.db, ["runs", "chunks"], "readwrite", async ({ runs, chunks }) => {
        chunks.delete([run.key, chunk.seq]);
        const stored = await done(runs.get(run.key));
        runs.put({ ...stored, confirmed: Math.max(stored.confirmed, chunk.seq + 1) });
      });
      await this._reload();
      return "sent";
    }
    return this._failed(run, result);
  }

  async _close(run) {
    const result = await this._call("POST", `${this._runsPath(run)}/${run.serverRun}/close`, {
      json: { chunks: run.recorded },
    });
    if (result.status === 200) {
      await this._update(run.key, { closed: true });
      return "sent";
    }
    return this._failed(run, result);
  }
}
