// The question bank on screen: a question's words in the reader's language, and the
// bank drawn theme by theme (the participants' choice and the facilitator's bank).

import { language, t } from "./i18n.js";
import { el } from "./ui.js";

/** A question's text in the reader's language, else the session's, else any. */
export function questionText(question, sessionLanguage) {
  if (!question) {
    return "";
  }
  const text = question.text || {};
  return text[language()] || text[sessionLanguage] || Object.values(text)[0] || question.id;
}

function themeTitle(themeId) {
  const key = `theme.${themeId}`;
  const title = t(key);
  return title === key ? "" : title;
}

/**
 * The questions in bank order, a `.question-group` per run of one theme: the theme's
 * title, then a `<ul class={listClass}>` of `item(question)`.
 */
export function themeGroups(questions, listClass, item) {
  const runs = [];
  for (const question of questions) {
    const run = runs[runs.length - 1];
    if (run && run.theme === question.theme) {
      run.questions.push(question);
    } else {
      runs.push({ theme: question.theme, questions: [question] });
    }
  }
  return runs.map((run) => {
    const title = themeTitle(run.theme);
    return el("div", { className: "question-group" }, [
      title ? el("h3", { className: "theme-title", text: title }) : null,
      el("ul", { className: listClass }, run.questions.map(item)),
    ]);
  });
}
