// The published invitation page: a person invites someone they know to a self-guided
// conversation. Without a token it is the form (the server mails a confirmation link);
// with the confirmation link's #token it confirms, and the room is ready for both.

import { callApi, refusal } from "../lib/api.js";
import { browserLanguage, chosenLanguage, isLanguage, language, t } from "../lib/i18n.js";
import { drawTopbar, startLanguage } from "../lib/topbar.js";
import { $, errorText, setText, show } from "../lib/ui.js";

function pageLanguage() {
  if (window.location.pathname.startsWith("/invitar")) {
    return "es";
  }
  return chosenLanguage("invite") || browserLanguage();
}

function tokenFromFragment() {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  return token && token.length >= 16 ? token : null;
}

function say(text) {
  const status = $("#invite-status");
  setText(status, text);
  status.focus();
}

async function send(event) {
  event.preventDefault();
  const body = {
    name: $("#f-name").value.trim(),
    email: $("#f-email").value.trim(),
    partner_name: $("#f-partner-name").value.trim(),
    partner_email: $("#f-partner-email").value.trim(),
    language: $("#f-language").value,
  };
  setText($("#invite-status"), t("common.saving"));
  const result = await callApi("POST", "/api/invites", { body });
  if (result.status === 202) {
    show($("#invite-form"), false);
    say(t("invite.check_email", { email: body.email }));
  } else {
    say(errorText(refusal(result)));
  }
}

async function confirm(token) {
  // the token leaves the address bar: a shared screen or history never shows it
  history.replaceState(null, "", window.location.pathname);
  setText($("#invite-status"), t("invite.confirming"));
  const result = await callApi("POST", "/api/invites/confirm", { body: { token } });
  if (result.status === 201) {
    say(t("invite.confirmed"));
    $("#invite-room-link").href = result.body.url;
    show($("#invite-room"), true);
  } else {
    say(errorText(refusal(result)));
  }
}

async function main() {
  drawTopbar({ heading: "invite.heading" });
  await startLanguage("invite", pageLanguage());
  $("#f-language").value = isLanguage(language()) ? language() : "en";
  const token = tokenFromFragment();
  if (token) {
    await confirm(token);
  } else {
    const status = await callApi("GET", "/api/invites");
    const open = status.status === 200 && status.body.open;
    show($("#invite-closed"), !open);
    show($("#invite-form"), open);
    $("#invite-form").addEventListener("submit", send);
  }
  document.body.dataset.ready = "true";
}

main();
