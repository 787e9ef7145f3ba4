// The staff API from the browser: the staff token lives in this tab's sessionStorage
// (the same key as the staff page, so signing in on one signs in on the other).

const TOKEN_KEY = "storyroom.staffToken";

let token = null;

export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  token = value || null;
  try {
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  } catch {
    // without storage the token lasts as long as this page
  }
}

export function hasToken() {
  return Boolean(token);
}

/** Call the staff API; resolves to {status, body} and never throws. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    let json = null;
    if (response.status !== 204) {
      try {
        json = await response.json();
      } catch {
        json = null;
      }
    }
    return { status: response.status, body: json };
  } catch {
    return { status: 0, body: null };
  }
}

/** A file from the staff API as a Blob (the token rides in a header, not the URL). */
export async function download(path) {
  try {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    return response.ok ? await response.blob() : null;
  } catch {
    return null;
  }
}
