// Strings for people: one catalogue per language in /static/i18n/<lang>.json.
// Markup names its strings with data-i18n="key" (text) and
// data-i18n-attr="aria-label:key;placeholder:key" (attributes); code calls t(key, vars).

export const LANGUAGES = ["en", "es"];
const NAMES = { en: "English", es: "Español" };
const FALLBACK = "en";

const catalogues = new Map();
let current = FALLBACK;
const listeners = new Set();

async function load(lang) {
  if (!catalogues.has(lang)) {
    const response = await fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" });
    if (!response.ok) {
      throw new Error(`could not load the ${lang} catalogue`);
    }
    catalogues.set(lang, await response.json());
  }
  return catalogues.get(lang);
}

export function isLanguage(lang) {
  return LANGUAGES.includes(lang);
}

/** A language's name in itself: "English", "Español". */
export function languageName(lang) {
  return NAMES[lang] || lang;
}

export function language() {
  return current;
}

/** A language the person chose before (per `scope`), else null. */
export function chosenLanguage(scope) {
  try {
    const lang = localStorage.getItem(`storyroom.lang.${scope}`);
    return isLanguage(lang) ? lang : null;
  } catch {
    return null;
  }
}

export function rememberLanguage(scope, lang) {
  try {
    localStorage.setItem(`storyroom.lang.${scope}`, lang);
  } catch {
    // private browsing: the choice lasts for this page only
  }
}

/** The browser's preferred supported language, else English. */
export function browserLanguage() {
  for (const tag of navigator.languages || [navigator.language || ""]) {
    const lang = tag.slice(0, 2).toLowerCase();
    if (isLanguage(lang)) {
      return lang;
    }
  }
  return FALLBACK;
}

export async function setLanguage(lang) {
  if (!isLanguage(lang)) {
    lang = FALLBACK;
  }
  await Promise.all([load(FALLBACK), load(lang)]);
  current = lang;
  document.documentElement.lang = lang;
  translatePage();
  for (const listener of listeners) {
    listener(lang);
  }
}

export function onLanguageChange(listener) {
  listeners.add(listener);
}

/** The string for `key` with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const catalogue = catalogues.get(current) || {};
  const fallback = catalogues.get(FALLBACK) || {};
  const template = catalogue[key] ?? fallback[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (match, name) =>
    Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : match,
  );
}

/** Fill in the strings marked in `root` (data-i18n, data-i18n-attr) once a language is set. */
export function translatePage(root = document) {
  if (!catalogues.has(current)) {
    return;
  }
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of node.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((part) => part.trim());
      if (attr && key) {
        node.setAttribute(attr, t(key));
      }
    }
  }
}

/** A `<select>` of languages, each named in its own language. */
export function bindLanguageSelect(select, onChoose) {
  select.value = current;
  select.addEventListener("change", () => onChoose(select.value));
  onLanguageChange((lang) => {
    select.value = lang;
  });
}
