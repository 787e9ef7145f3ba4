// Sound on the page: the one AudioContext, level probes on streams, the level meters
// that show them, and how good a seat's connection is.

import { el } from "./ui.js";

let sharedContext = null;

/** One AudioContext per page; resumed whenever asked for (after a click it can start). */
export function audioContext() {
  if (!sharedContext) {
    sharedContext = new AudioContext();
  }
  if (sharedContext.state === "suspended") {
    sharedContext.resume().catch(() => {});
  }
  return sharedContext;
}

/** A level probe on a MediaStream: level() is 0..1 on a -60..0 dBFS scale. */
export class StreamProbe {
  constructor(stream) {
    const context = audioContext();
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
  }

  level() {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const sample of this.buffer) {
      sum += sample * sample;
    }
    const rms = Math.sqrt(sum / this.buffer.length);
    if (rms <= 0) {
      return 0;
    }
    const db = 20 * Math.log10(rms);
    return Math.min(1, Math.max(0, (db + 60) / 60));
  }

  close() {
    this.source.disconnect();
  }
}

/** A level meter: `<div class="meter" role="meter">` with a fill scaled by CSSOM. */
export function makeMeter(labelledBy) {
  const fill = el("span", { className: "meter-fill" });
  const meter = el(
    "div",
    {
      className: "meter",
      attrs: {
        role: "meter",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": 0,
        "aria-labelledby": labelledBy,
      },
    },
    [fill],
  );
  return meter;
}

export function setMeter(meter, value) {
  const level = Math.min(1, Math.max(0, Number(value) || 0));
  const fill = meter.firstElementChild;
  if (fill) {
    // CSSOM is allowed by the CSP; style attributes in markup are not.
    fill.style.transform = `scaleX(${level.toFixed(3)})`;
  }
  const percent = Math.round(level * 100);
  if (Math.abs(percent - Number(meter.getAttribute("aria-valuenow"))) >= 5) {
    meter.setAttribute("aria-valuenow", String(percent));
  }
  meter.dataset.active = level > 0.15 ? "true" : "false";
}

/** Quality from the server's stats: "good", "fair", "poor" or null when unknown. */
export function connectionQuality(stats) {
  if (!stats || typeof stats.loss !== "number") {
    return null; // `{}` until the server's first measurement
  }
  const loss = stats.loss || 0;
  const jitter = stats.jitter_ms || 0;
  const rtt = stats.rtt_ms ?? 0;
  if (loss > 0.05 || jitter > 60 || rtt > 500) {
    return "poor";
  }
  if (loss > 0.01 || jitter > 30 || rtt > 250) {
    return "fair";
  }
  return "good";
}
