// Small DOM helpers shared by the pages. Text always goes in through textContent.

import { t } from "./i18n.js";

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/**
 * Build an element: el("button", {className, text, attrs, on}, [children]). `i18n` (a
 * catalogue key for its text) and `i18nAttrs` ({attribute: key}) are for what a page
 * draws before it sets its language: setLanguage() fills them in, as in the markup.
 */
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  const { className, text, i18n, i18nAttrs = {}, attrs = {}, on = {}, dataset = {} } = options;
  if (className) {
    node.className = className;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  if (i18n) {
    node.dataset.i18n = i18n;
  }
  const translatedAttrs = Object.entries(i18nAttrs).map(([name, key]) => `${name}:${key}`);
  if (translatedAttrs.length) {
    node.dataset.i18nAttr = translatedAttrs.join(";");
  }
  for (const [name, value] of Object.entries(attrs)) {
    if (value === true) {
      node.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      node.setAttribute(name, String(value));
    }
  }
  for (const [name, value] of Object.entries(dataset)) {
    node.dataset[name] = value;
  }
  for (const [event, listener] of Object.entries(on)) {
    node.addEventListener(event, listener);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

/**
 * Re-render `container` with `render()`, then give focus back to the element with the
 * same data-focus-key, so keyboard users keep their place when lists are rebuilt.
 */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : null;
  render();
  if (key) {
    const again = $$("[data-focus-key]", container).find((node) => node.dataset.focusKey === key);
    // A button that became disabled (Up on the new first item): the nearest usable one
    // after it in its row (Down), else before it.
    let usable = null;
    if (again && again.disabled && again.parentElement) {
      const buttons = $$("button", again.parentElement);
      const at = buttons.indexOf(again);
      usable =
        buttons.slice(at + 1).find((button) => !button.disabled) ||
        buttons.slice(0, at).reverse().find((button) => !button.disabled) ||
        null;
    }
    if (again && !again.disabled) {
      again.focus();
    } else if (usable) {
      usable.focus();
    } else if (container.tabIndex >= 0 || container.hasAttribute("tabindex")) {
      container.focus();
    }
  }
}

// -- audio ------------------------------------------------------------------------

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

// -- dialogs ------------------------------------------------------------------------

let dialogCount = 0;

/**
 * An accessible confirmation (a modal <dialog>: focus moves in, Escape cancels, focus
 * returns). Resolves true when confirmed.
 */
export function confirmDialog({ title, body, confirm, cancel, danger = false }) {
  dialogCount += 1;
  const titleId = `dialog-title-${dialogCount}`;
  const bodyId = `dialog-body-${dialogCount}`;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    let answer = false;
    const cancelButton = el("button", { text: cancel, attrs: { type: "button" } });
    const confirmButton = el("button", {
      text: confirm,
      className: danger ? "danger" : "primary",
      attrs: { type: "button" },
    });
    const dialog = el(
      "dialog",
      {
        className: "dialog",
        attrs: { "aria-labelledby": titleId, "aria-describedby": bodyId },
      },
      [
        el("h2", { text: title, attrs: { id: titleId } }),
        el("p", { text: body, attrs: { id: bodyId } }),
        el("div", { className: "dialog-buttons" }, [cancelButton, confirmButton]),
      ],
    );
    cancelButton.addEventListener("click", () => dialog.close());
    confirmButton.addEventListener("click", () => {
      answer = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && typeof opener.focus === "function" && document.contains(opener)) {
        opener.focus();
      }
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancelButton.focus();
  });
}

/** Plain words for an ack's error: the catalogue's, else the server's message. */
export function errorText(error) {
  if (!error) {
    return t("error.generic");
  }
  const key = `error.${error.code}`;
  const text = t(key);
  if (text !== key) {
    return text;
  }
  return error.message || t("error.generic");
}
