// The front page: a pointer to the personal links, in the browser's language.

import { browserLanguage, setLanguage } from "../lib/i18n.js";

setLanguage(browserLanguage());
