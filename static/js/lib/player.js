// A conversation's player (the copy page, the public listening page, the staff recording
// page): the browser's own audio controls, the waveform drawn from the server's levels
// (waveform.json: computed once at finalization, a few kB, so a phone never decodes
// forty minutes of audio to draw it), and the cued questions as chapters to jump to.
// Clicking the waveform seeks too; the chapter buttons and the audio controls are the
// keyboard's way; with `marks`, numbered buttons on the waveform at each question, and
// with `steps`, buttons to the previous and next question; with `captionsUrl` (a WebVTT
// transcript), the line being said under the player, which a toggle turns off and on.

import { formatClock } from "./format.js";
import { t } from "./i18n.js";
import { el } from "./ui.js";

const WAVE_COLOUR = "#3b6ea5";
const PLAYED_COLOUR = "#1d3f66";
const CUE_COLOUR = "#c0392b";

const CUE_TIMES = /^\s*((?:\d+:)?\d{2}:\d{2}\.\d{3})\s+-->\s+((?:\d+:)?\d{2}:\d{2}\.\d{3})/;
const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&nbsp;": "\u00a0" };

function vttSeconds(stamp) {
  return stamp.split(":").reduce((total, part) => total * 60 + Number(part), 0);
}

/** A cue's text as plain words: `<v Name>` voices become "Name: ", other tags go. */
function cueText(lines) {
  return lines
    .join(" ")
    .replace(/<v(?:\.[^ >]*)?\s+([^>]*)>/g, "$1: ")
    .replace(/<[^>]*>/g, "")
    .replace(/&(?:amp|lt|gt|nbsp);/g, (entity) => ENTITIES[entity])
    .trim();
}

/** The cues of a WebVTT file as [{start, end, text}], in order. */
export function parseVtt(source) {
  const cues = [];
  const blocks = source.replace(/\r\n?/g, "\n").split(/\n{2,}/);
  for (const block of blocks) {
    const lines = block.split("\n");
    const at = lines.findIndex((line) => CUE_TIMES.test(line));
    if (at < 0) {
      continue; // the header, a NOTE or a STYLE block
    }
    const [, start, end] = CUE_TIMES.exec(lines[at]);
    const text = cueText(lines.slice(at + 1));
    if (text) {
      cues.push({ start: vttSeconds(start), end: vttSeconds(end), text });
    }
  }
  return cues;
}

function draw(canvas, levels, chapters, duration, position) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const middle = height / 2;
  const played = duration > 0 ? (position / duration) * width : 0;
  for (let x = 0; x < width; x += 2) {
    const from = Math.floor((x / width) * levels.length);
    const to = Math.max(from + 1, Math.floor(((x + 2) / width) * levels.length));
    let level = 0;
    for (let i = from; i < to && i < levels.length; i += 1) {
      level = Math.max(level, levels[i]);
    }
    const half = Math.max(0.5, (level / 100) * (middle - 1));
    g.fillStyle = x < played ? PLAYED_COLOUR : WAVE_COLOUR;
    g.fillRect(x, middle - half, 1.5, half * 2);
  }
  g.fillStyle = CUE_COLOUR;
  for (const chapter of chapters) {
    if (duration > 0) {
      g.fillRect(Math.round((chapter.start_s / duration) * width), 0, 2, height);
    }
  }
}

/**
 * Build a player into `root` for audio at `src` (a URL the page may fetch), with
 * `chapters` ([{start_s, title}]), the recording's `duration` and, if there is one, the
 * waveform's `waveformUrl` and the captions' `captionsUrl`; `ids` ({audio, chapters})
 * names its parts for the page.
 * Returns {audio, redraw}.
 */
export function buildPlayer(
  root,
  {
    src,
    chapters = [],
    duration = 0,
    waveformUrl = null,
    captionsUrl = null,
    label = "",
    marks = false,
    steps = false,
    ids = {},
  },
) {
  const audio = el("audio", {
    className: "player",
    attrs: { controls: true, preload: "metadata", src, id: ids.audio },
  });
  if (label) {
    audio.setAttribute("aria-label", label);
  }
  const canvas = el("canvas", {
    className: "waveform-canvas",
    attrs: { "aria-hidden": "true", height: "64" },
  });
  const markRow = marks ? el("div", { className: "waveform-marks" }) : null;
  const wave = el("div", { className: "waveform-box" }, [canvas, markRow]);
  wave.hidden = true;
  const list = el("ol", { className: "chapter-list player-chapters", attrs: { id: ids.chapters } });
  const state = { levels: null, chapter: -1 };

  const redraw = () => {
    if (state.levels) {
      const length = duration || audio.duration || 0;
      draw(canvas, state.levels, chapters, length, audio.currentTime || 0);
    }
  };
  const seek = (seconds) => {
    audio.currentTime = seconds;
    audio.play().catch(() => {}); // a browser may refuse to play before a gesture
    redraw();
  };
  chapters.forEach((chapter, index) => {
    const button = el(
      "button",
      {
        className: "link-button chapter-button",
        attrs: { type: "button" },
        on: { click: () => seek(chapter.start_s) },
      },
      [
        el("span", { className: "chapter-time", text: formatClock(chapter.start_s) }),
        " ",
        el("span", { text: chapter.title }),
      ],
    );
    button.setAttribute("aria-label", t("player.jump", { n: index + 1, title: chapter.title }));
    list.append(el("li", {}, [button]));
  });
  if (markRow) {
    const length = duration || 0;
    markRow.replaceChildren(
      ...chapters.map((chapter, index) => {
        const mark = el("button", {
          className: "cue-mark",
          text: String(index + 1),
          attrs: {
            type: "button",
            title: chapter.title,
            "aria-label": t("player.mark", { n: index + 1, time: formatClock(chapter.start_s), title: chapter.title }),
          },
          on: { click: () => seek(chapter.start_s) },
        });
        // CSSOM is allowed by the CSP; style attributes in markup are not
        mark.style.left = `${length > 0 ? ((chapter.start_s / length) * 100).toFixed(2) : 0}%`;
        return mark;
      }),
    );
  }
  const currentIndex = () => {
    let current = -1;
    chapters.forEach((chapter, index) => {
      if ((audio.currentTime || 0) + 0.05 >= chapter.start_s) {
        current = index;
      }
    });
    return current;
  };
  const stepRow =
    steps && chapters.length
      ? el("div", { className: "button-row player-steps" }, [
          el("button", {
            className: "quiet small",
            text: t("player.prev"),
            attrs: { type: "button" },
            on: {
              click: () => {
                // like a CD player: back to this question's start, or the one before when at it
                const index = currentIndex();
                const start = chapters[index] ? chapters[index].start_s : 0;
                const target = audio.currentTime - start > 2 || index <= 0 ? Math.max(index, 0) : index - 1;
                seek(chapters[target].start_s);
              },
            },
          }),
          el("button", {
            className: "quiet small",
            text: t("player.next"),
            attrs: { type: "button" },
            on: {
              click: () => {
                const index = currentIndex();
                if (index + 1 < chapters.length) {
                  seek(chapters[index + 1].start_s);
                }
              },
            },
          }),
        ])
      : null;
  const heading = chapters.length ? el("h3", { className: "chapters-heading", text: t("player.chapters") }) : null;
  const captions = captionsUrl ? buildCaptions(audio, captionsUrl) : null;
  root.replaceChildren(...[audio, wave, captions, stepRow, heading, list].filter(Boolean));

  canvas.addEventListener("click", (event) => {
    const length = duration || audio.duration || 0;
    const box = canvas.getBoundingClientRect();
    if (length > 0 && box.width > 0) {
      seek(((event.clientX - box.left) / box.width) * length);
    }
  });
  const follow = () => {
    redraw();
    const current = currentIndex();
    if (current !== state.chapter) {
      state.chapter = current;
      Array.from(list.children).forEach((item, index) => {
        if (index === current) {
          item.setAttribute("aria-current", "true");
        } else {
          item.removeAttribute("aria-current");
        }
      });
    }
  };
  audio.addEventListener("timeupdate", follow);
  audio.addEventListener("seeked", follow);
  window.addEventListener("resize", redraw);
  if (waveformUrl) {
    fetch(waveformUrl, { credentials: "same-origin", cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((body) => {
        if (body && Array.isArray(body.levels)) {
          state.levels = body.levels;
          wave.hidden = false;
          wave.dataset.levels = String(body.levels.length);
          redraw();
        }
      })
      .catch(() => {}); // no waveform: the player and chapters still work
  }
  return { audio, redraw };
}

/**
 * The captions under a player: the cue being said at the audio's time, in an element
 * that screen readers do not announce (aria-live="off": the audio is already heard),
 * with a "Captions" toggle. Hidden until the file is fetched and has cues.
 */
function buildCaptions(audio, captionsUrl) {
  const line = el("p", { className: "caption-line", attrs: { "aria-live": "off" } });
  const state = { cues: [], shown: true, current: null };
  const toggle = el("button", {
    className: "quiet small caption-toggle",
    text: t("player.captions"),
    attrs: { type: "button", "aria-pressed": "true" },
    on: {
      click: () => {
        state.shown = !state.shown;
        toggle.setAttribute("aria-pressed", String(state.shown));
        line.hidden = !state.shown;
      },
    },
  });
  const box = el("div", { className: "player-captions" }, [toggle, line]);
  box.hidden = true;
  const follow = () => {
    const now = audio.currentTime || 0;
    const cue = state.cues.find((c) => c.start <= now && now < c.end) || null;
    if (cue !== state.current) {
      state.current = cue;
      line.textContent = cue ? cue.text : "";
    }
  };
  audio.addEventListener("timeupdate", follow);
  audio.addEventListener("seeked", follow);
  fetch(captionsUrl, { credentials: "same-origin", cache: "no-store" })
    .then((response) => (response.ok ? response.text() : ""))
    .then((source) => {
      state.cues = parseVtt(source);
      box.hidden = state.cues.length === 0;
      box.dataset.cues = String(state.cues.length);
      follow();
    })
    .catch(() => {}); // no captions: the player works without them
  return box;
}
