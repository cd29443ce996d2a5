// Helpers for the console's browser tests (Playwright's playwright-core driving Debian's
// chromium, or with BROWSER=firefox puppeteer-core driving Debian's firefox-esr through
// firefox.mjs; no browser download). Reused by every console flow script:
//   const b = await launch(); const page = await b.newPage();
//   await signIn(page, base, user, password); await changePassword(page, old, next);
//   const r = await postForm(page, "/console/tenants/new", { name: "x" });
//   await step(page, dir, "name", async () => { ... })  // screenshot on failure
import { chromium } from "playwright-core";
import path from "node:path";
import { launchFirefox } from "./firefox.mjs";

export const TIMEOUT = 20000;

/**
 * Starts the browser named by BROWSER: `chromium` (the default; CHROMIUM env overrides the
 * path) or `firefox` (FIREFOX overrides the path).
 */
export async function launch() {
  if (process.env.BROWSER === "firefox") return launchFirefox();
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
}

/** Fails with `message` unless `cond`. */
export function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** Clicks `selector` and waits for the page it leads to to load. */
export async function clickAndWait(page, selector) {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
}

/** Signs in on the sign-in page (from any console URL). */
export async function signIn(page, base, username, password) {
  await page.goto(`${base}/console/signin`);
  await page.fill("#username", username);
  await page.fill("#password", password);
  await clickAndWait(page, "#signin-submit");
}

/** Changes the password on /console/password (the forced change of a first sign-in). */
export async function changePassword(page, oldPassword, newPassword) {
  if (!page.url().endsWith("/console/password")) {
    await page.goto(new URL("/console/password", page.url()).href);
  }
  await page.fill("#old", oldPassword);
  await page.fill("#new", newPassword);
  await page.fill("#confirm", newPassword);
  await clickAndWait(page, "#password-submit");
}

/** The CSRF token of the current page (every signed-in page has one in its forms). */
export async function csrf(page) {
  return page.$eval("input[name=_csrf]", (e) => e.value);
}

/**
 * POSTs an urlencoded form with the page's CSRF token from inside the page (same origin,
 * same cookies); returns {status, url, text}. Pass `withCsrf: false` to leave it out.
 */
export async function postForm(page, action, fields, { withCsrf = true } = {}) {
  const token = withCsrf ? await csrf(page) : null;
  return page.evaluate(
    async ({ action, fields, token }) => {
      const body = new URLSearchParams(fields);
      if (token) body.set("_csrf", token);
      const r = await fetch(action, { method: "POST", body, credentials: "same-origin" });
      return { status: r.status, url: r.url, text: await r.text() };
    },
    { action, fields, token },
  );
}

/** Waits until `fn` returns true (polling, bounded by TIMEOUT). */
export async function until(fn, what) {
  const end = Date.now() + TIMEOUT;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Saves a screenshot of `page` as DIR/NAME.png; returns the path. */
export async function shot(page, dir, name) {
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Runs one step; on failure keeps a screenshot (path printed) and rethrows. */
export async function step(page, dir, name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    let file = "(no screenshot)";
    try {
      file = await shot(page, dir, `failed-${name}`);
    } catch (_) {}
    console.log(`FAILED ${name}: ${e.message}\nscreenshot: ${file}`);
    throw e;
  }
}
