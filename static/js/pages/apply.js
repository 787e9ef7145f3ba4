// The public application form: English at /apply, Spanish at /solicitar (or ?lang=).
// Validation happens on the server (one place); its field codes come back and each
// message is shown beside its field. Nothing typed is cleared until it was received.

import { callApi, refusal } from "../lib/api.js";
import { availabilityRows, fillTimeZones } from "../lib/availability.js";
import { browserLanguage, chosenLanguage, isLanguage, language, onLanguageChange, t } from "../lib/i18n.js";
import { showOrganisation } from "../lib/organisation.js";
import { placementChoices } from "../lib/placement.js";
import { drawTopbar, startLanguage } from "../lib/topbar.js";
import { $, $$, el, show } from "../lib/ui.js";

// The server's field codes and the words for them.
const MESSAGES = {
  required: "apply.err_required",
  invalid_type: "apply.err_invalid",
  invalid_value: "apply.err_invalid",
  unknown_field: "apply.err_invalid",
  too_long: "apply.err_too_long",
  invalid_email: "apply.err_email",
  invalid_phone: "apply.err_phone",
  unknown_region: "apply.err_region",
  unknown_time_zone: "apply.err_time_zone",
  unknown_language: "apply.err_language",
  invalid_placement: "apply.err_placement",
  last_name_in_bio: "apply.err_last_name_in_bio",
  invalid_day: "apply.err_day",
  invalid_time: "apply.err_time",
  window_order: "apply.err_window_order",
  window_too_short: "apply.err_window_short",
  too_many: "apply.err_too_many",
  consent_required: "apply.err_consent",
};
// Per field, a more specific word for "required" where it helps.
const REQUIRED = {
  speaks: "apply.err_speaks",
  placement: "apply.err_placement",
  availability: "apply.err_availability",
};
const FIELD_LABELS = {
  first_name: "apply.first_name",
  last_name: "apply.last_name",
  email: "apply.email",
  phone: "apply.phone",
  city: "apply.city",
  region: "apply.region",
  time_zone: "apply.time_zone",
  speaks: "apply.speaks",
  placement: "apply.placement",
  party: "apply.party",
  bio: "apply.bio",
  shaped_views: "apply.shaped_views",
  availability: "apply.availability",
  accessibility: "apply.accessibility",
  consent_contact: "apply.consent_contact",
  consent_privacy: "apply.consent_privacy",
};

const page = {
  regions: [],
  errors: {},
  windows: null,
  sending: false,
  organisation: null,
  unknownOrganisation: false,
};
const FORM_PATH = /^\/(?:apply|solicitar)\/([a-z0-9-]{1,40})\/?$/;

/** The organisation whose own form this is (`/apply/{slug}`), or null for `/apply`. */
function organisationSlug() {
  const found = FORM_PATH.exec(window.location.pathname);
  return found ? found[1] : null;
}

/** Where the form goes: the organisation's own, else the default organisation's. */
function applyPath() {
  const slug = organisationSlug();
  return slug ? `/api/apply/${encodeURIComponent(slug)}` : "/api/applications";
}

async function loadOrganisation() {
  const slug = organisationSlug();
  if (!slug) {
    return true;
  }
  const result = await callApi("GET", `/api/public/organisations/${encodeURIComponent(slug)}`);
  page.organisation = result.status === 200 ? result.body : null;
  return result.status === 200;
}

function pageLanguage() {
  const asked = new URLSearchParams(window.location.search).get("lang");
  if (isLanguage(asked)) {
    return asked;
  }
  if (window.location.pathname.startsWith("/solicitar")) {
    return "es";
  }
  return chosenLanguage("apply") || browserLanguage();
}

// -- regions -------------------------------------------------------------------------

async function loadRegions() {
  const result = await callApi("GET", "/api/regions");
  page.regions = result.status === 200 ? result.body.regions : [];
}

function renderRegions() {
  const select = $("#f-region");
  const keep = select.value;
  const lang = language();
  const sorted = page.regions
    .slice()
    .sort((x, y) => (x.name[lang] || x.name.en).localeCompare(y.name[lang] || y.name.en, lang));
  select.replaceChildren(
    el("option", { text: t("apply.choose"), attrs: { value: "" } }),
    ...sorted.map((region) =>
      el("option", { text: region.name[lang] || region.name.en, attrs: { value: region.code } }),
    ),
  );
  select.value = keep;
}

// -- values and errors ---------------------------------------------------------------

function value(id) {
  return $(id).value.trim();
}

function payload() {
  const placement = $("input[name=placement]:checked");
  return {
    first_name: value("#f-first_name"),
    last_name: value("#f-last_name"),
    email: value("#f-email"),
    phone: value("#f-phone"),
    city: value("#f-city"),
    region: $("#f-region").value,
    time_zone: $("#f-time_zone").value,
    language: language(),
    speaks: $$("input[name=speaks]:checked").map((box) => box.value),
    placement: placement ? Number.parseInt(placement.value, 10) : null,
    party: value("#f-party"),
    bio: value("#f-bio"),
    shaped_views: value("#f-shaped_views"),
    availability: page.windows.read(),
    accessibility: value("#f-accessibility"),
    consent_contact: $("#f-consent_contact").checked,
    consent_privacy: $("#f-consent_privacy").checked,
    website: $("#f-website").value,
  };
}

function message(field, code) {
  if (code === "required" && REQUIRED[field]) {
    return t(REQUIRED[field]);
  }
  return t(MESSAGES[code] || "apply.err_invalid");
}

/** The control to focus for a field (the first of a group). */
function controlOf(field) {
  return (
    $(`#f-${field}`) ||
    $(`[data-field="${field}"] input, [data-field="${field}"] select`) ||
    $(`[data-field="${field}"] button`)
  );
}

function renderErrors() {
  const errors = page.errors;
  for (const node of $$(".field-error")) {
    const field = node.id.slice(2);
    const code = errors[field];
    node.textContent = code ? message(field, code) : "";
    show(node, Boolean(code));
  }
  for (const control of $$("#apply-form input, #apply-form select, #apply-form textarea")) {
    const container = control.closest("[data-field]");
    const field = container ? container.dataset.field : control.name;
    if (errors[field]) {
      control.setAttribute("aria-invalid", "true");
    } else {
      control.removeAttribute("aria-invalid");
    }
  }
  const fields = Object.keys(errors);
  show($("#error-summary"), fields.length > 0);
  $("#error-list").replaceChildren(
    ...fields.map((field) => {
      const link = el("a", {
        text: `${t(FIELD_LABELS[field] || "apply.err_field")}: ${message(field, errors[field])}`,
        attrs: { href: `#e-${field}` },
        on: {
          click: (event) => {
            event.preventDefault();
            const control = controlOf(field);
            if (control) {
              control.focus();
            }
          },
        },
      });
      return el("li", {}, [link]);
    }),
  );
}

// Light checks before sending, so the most common mistakes show without a round trip;
// the server checks everything again.
function localErrors(body) {
  const errors = {};
  for (const field of ["first_name", "last_name", "email", "city", "region", "time_zone", "bio"]) {
    if (!body[field]) {
      errors[field] = "required";
    }
  }
  if (!body.speaks.length) {
    errors.speaks = "required";
  }
  if (body.placement === null) {
    errors.placement = "required";
  }
  if (!body.availability.length) {
    errors.availability = "required";
  } else if (body.availability.some((w) => w.day === null)) {
    errors.availability = "invalid_day";
  }
  for (const field of ["consent_contact", "consent_privacy"]) {
    if (!body[field]) {
      errors[field] = "consent_required";
    }
  }
  return errors;
}

async function submit(event) {
  event.preventDefault();
  if (page.sending) {
    return;
  }
  const body = payload();
  const status = $("#submit-status");
  page.errors = localErrors(body);
  if (Object.keys(page.errors).length) {
    renderErrors();
    status.textContent = "";
    $("#error-summary").focus();
    return;
  }
  page.sending = true;
  $("#submit").disabled = true;
  status.textContent = t("apply.sending");
  const result = await callApi("POST", applyPath(), { body });
  page.sending = false;
  $("#submit").disabled = false;
  if (result.status === 201) {
    page.errors = {};
    renderErrors();
    status.textContent = "";
    showDone(body.first_name);
    return;
  }
  const error = refusal(result);
  if (error && error.fields) {
    page.errors = error.fields;
    renderErrors();
    status.textContent = "";
    $("#error-summary").focus();
    return;
  }
  page.errors = {};
  renderErrors();
  if (result.status === 429) {
    status.textContent = t("apply.err_rate_limited");
  } else if (result.status === 0) {
    status.textContent = t("apply.err_network");
  } else {
    status.textContent = t("apply.err_server");
  }
}

function showDone(firstName) {
  page.doneName = firstName;
  renderDone();
  show($("#apply"), false);
  show($("#done"), true);
  $("#done").focus();
  window.scrollTo(0, 0);
}

function renderDone() {
  if (page.doneName) {
    $("#done-body").textContent = t("apply.done_body", { name: page.doneName });
  }
}

function renderOrganisation() {
  const slot = $("#organisation");
  if (page.unknownOrganisation) {
    slot.replaceChildren(el("p", { className: "status", text: t("apply.org_unknown") }));
    slot.hidden = false;
  } else {
    showOrganisation(slot, page.organisation);
  }
}

function render() {
  renderOrganisation();
  renderRegions();
  fillTimeZones($("#f-time_zone"));
  page.windows.render();
  renderErrors();
  renderDone();
}

async function main() {
  drawTopbar({ heading: "apply.heading" });
  $(".scale").replaceChildren(...placementChoices());
  page.windows = availabilityRows($("#windows"), "w");
  page.windows.add();
  const [, , known] = await Promise.all([
    startLanguage("apply", pageLanguage()),
    loadRegions(),
    loadOrganisation(),
  ]);
  // a mistyped address of an organisation's form: say so rather than take an application
  page.unknownOrganisation = !known;
  show($("#apply-form"), known);
  onLanguageChange(render);
  render();
  $("#add-window").addEventListener("click", () => {
    const row = page.windows.add();
    row.querySelector("select").focus();
  });
  $("#apply-form").addEventListener("submit", submit);
  document.body.dataset.ready = "true";
}

main();
