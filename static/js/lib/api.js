// The one fetch core: every page calls the server's JSON API through here. JSON goes
// out and comes back, a refusal comes as {"error": {"code", "message"}}, the staff
// session's CSRF token rides on every method that changes something, and nothing
// throws: a call resolves to {status, body}, with status 0 when the server could not be
// reached.

const SAFE_METHODS = new Set(["GET", "HEAD"]);

function authHeaders(method, { csrf = null, bearer = null }) {
  const headers = {};
  if (bearer) {
    headers.Authorization = `Bearer ${bearer}`;
  }
  if (csrf && !SAFE_METHODS.has(method)) {
    headers["X-CSRF-Token"] = csrf;
  }
  return headers;
}

/**
 * Call the API: `body` goes as JSON; `csrf` is the staff session's token (sent on unsafe
 * methods), `bearer` a key for the Authorization header (a participant's copy link).
 */
export async function callApi(method, path, { body, csrf = null, bearer = null } = {}) {
  const headers = authHeaders(method, { csrf, bearer });
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  let response = null;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    return { status: 0, body: null };
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null; // 204, or not JSON
  }
  return { status: response.status, body: json };
}

/** A file from the API as a Blob, or null when it could not be had. */
export async function fetchBlob(path, { bearer = null } = {}) {
  try {
    const response = await fetch(path, {
      headers: authHeaders("GET", { bearer }),
      credentials: "same-origin",
      cache: "no-store",
    });
    return response.ok ? await response.blob() : null;
  } catch {
    return null;
  }
}

/**
 * Send JSON and take a file back (a clip): resolves to {status, blob} when it came, else
 * {status, blob: null, error} with the server's refusal ({code, message}) if it gave one.
 */
export async function fetchMade(path, { body, csrf = null, bearer = null } = {}) {
  const headers = { ...authHeaders("POST", { csrf, bearer }), "Content-Type": "application/json" };
  let response = null;
  try {
    response = await fetch(path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    if (response.ok) {
      return { status: response.status, blob: await response.blob(), error: null };
    }
    const refused = await response.json().catch(() => null);
    return { status: response.status, blob: null, error: (refused && refused.error) || null };
  } catch {
    return { status: response ? response.status : 0, blob: null, error: null };
  }
}

/** The server's refusal in a result, {code, message, ...}, or null. */
export function refusal(result) {
  return (result.body && result.body.error) || null;
}
