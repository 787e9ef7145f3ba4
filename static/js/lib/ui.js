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

/**
 * Give `table` its header row: a column heading per catalogue key, filled in by
 * setLanguage() like the markup's. A key in `hidden` heads its column for screen readers
 * only (a column of buttons).
 */
export function tableHead(table, keys, { hidden = [] } = {}) {
  const heading = (key) =>
    hidden.includes(key)
      ? el("th", { attrs: { scope: "col" } }, [el("span", { className: "visually-hidden", i18n: key })])
      : el("th", { i18n: key, attrs: { scope: "col" } });
  table.createTHead().replaceChildren(el("tr", {}, keys.map(heading)));
}

/** Set a node's text only when it changed (snapshots arrive often: screen readers and
 * selections are left alone). */
export function setText(node, text) {
  if (node.textContent !== text) {
    node.textContent = text;
  }
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

// -- dialogs ------------------------------------------------------------------------

let dialogCount = 0;

/**
 * An accessible confirmation (a modal <dialog>: focus moves in, Escape cancels, focus
 * returns). Resolves true when confirmed. `cancel` names the way out when plain "Cancel"
 * would not say what it keeps ("Keep recording").
 */
export function confirmDialog({ title, body, confirm, cancel = t("common.cancel"), danger = false }) {
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
