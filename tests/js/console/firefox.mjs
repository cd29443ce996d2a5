// Firefox for the console's browser tests: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (Playwright's Firefox needs its own patched build, which cannot be
// downloaded here). `launchFirefox()` returns a browser whose contexts and pages answer the
// small part of Playwright's API that the console scenarios use (goto, fill, click, check,
// selectOption, setInputFiles, textContent, isVisible, ...), so core.mjs and org.mjs run
// unchanged in both browsers. A method the scenarios start using must be added here.
import puppeteer from "puppeteer-core";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** Starts headless firefox-esr (FIREFOX env overrides the path). */
export async function launchFirefox() {
  // Uploaded files live until the browser closes: Firefox reads a chosen file when the
  // form is submitted, not when it is chosen.
  const uploads = mkdtempSync(path.join(os.tmpdir(), "console-upload-"));
  const browser = await puppeteer.launch({
    browser: "firefox",
    protocol: "webDriverBiDi",
    executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
    headless: true,
  });
  return {
    async newContext({ locale } = {}) {
      const ctx = await browser.createBrowserContext();
      return {
        async newPage() {
          const page = await ctx.newPage();
          if (locale) await page.setExtraHTTPHeaders({ "Accept-Language": locale });
          return new FirefoxPage(page, uploads);
        },
        close: () => ctx.close(),
      };
    },
    close: async () => {
      await browser.close();
      rmSync(uploads, { recursive: true, force: true });
    },
  };
}

/** A puppeteer page behind the Playwright method names the scenarios call. */
class FirefoxPage {
  constructor(page, uploads) {
    this.p = page;
    this.uploads = uploads;
    this.timeout = 20000;
    this.request = {
      get: async (url) => {
        const r = await this.p.evaluate(async (u) => {
          const res = await fetch(u, { credentials: "same-origin" });
          return { status: res.status, text: await res.text() };
        }, url);
        return { ok: () => r.status >= 200 && r.status < 300, status: () => r.status, text: async () => r.text };
      },
    };
  }
  setDefaultTimeout(ms) {
    this.timeout = ms;
    this.p.setDefaultTimeout(ms);
  }
  on(event, fn) {
    this.p.on(event, fn);
  }
  url() {
    return this.p.url();
  }
  goto(url) {
    return this.p.goto(url, { waitUntil: "load" });
  }
  reload() {
    return this.p.reload({ waitUntil: "load" });
  }
  waitForNavigation() {
    return this.p.waitForNavigation({ waitUntil: "load" });
  }
  waitForSelector(selector) {
    return this.p.waitForSelector(selector);
  }
  waitForFunction(fn, arg) {
    return this.p.waitForFunction(fn, { timeout: this.timeout }, arg);
  }
  async el(selector) {
    const h = await this.p.waitForSelector(selector);
    if (!h) throw new Error(`no element ${selector}`);
    return h;
  }
  async click(selector) {
    await (await this.el(selector)).click();
  }
  async fill(selector, value) {
    const h = await this.el(selector);
    await h.evaluate((e, v) => {
      e.focus();
      e.value = v;
      e.dispatchEvent(new Event("input", { bubbles: true }));
      e.dispatchEvent(new Event("change", { bubbles: true }));
    }, value);
  }
  async check(selector) {
    const h = await this.el(selector);
    if (!(await h.evaluate((e) => e.checked))) await h.click();
  }
  async selectOption(selector, want) {
    const h = await this.el(selector);
    const ok = await h.evaluate((e, w) => {
      const o = [...e.options].find((o) => (typeof w === "string" ? o.value === w : o.label === w.label || o.text === w.label));
      if (!o) return false;
      e.value = o.value;
      e.dispatchEvent(new Event("input", { bubbles: true }));
      e.dispatchEvent(new Event("change", { bubbles: true }));
      return true;
    }, want);
    if (!ok) throw new Error(`no option ${JSON.stringify(want)} in ${selector}`);
  }
  async setInputFiles(selector, { name, buffer }) {
    const file = path.join(mkdtempSync(path.join(this.uploads, "f-")), name);
    writeFileSync(file, buffer);
    await (await this.el(selector)).uploadFile(file);
  }
  async textContent(selector) {
    return (await this.el(selector)).evaluate((e) => e.textContent);
  }
  async inputValue(selector) {
    return (await this.el(selector)).evaluate((e) => e.value);
  }
  async getAttribute(selector, name) {
    return (await this.el(selector)).evaluate((e, n) => e.getAttribute(n), name);
  }
  /** Like Playwright's: answers at once (no waiting), false when there is no such element. */
  async isVisible(selector) {
    const h = await this.p.$(selector);
    if (!h) return false;
    return h.evaluate((e) => {
      const s = getComputedStyle(e);
      const r = e.getBoundingClientRect();
      return s.visibility !== "hidden" && s.display !== "none" && r.width > 0 && r.height > 0;
    });
  }
  async $(selector) {
    const h = await this.p.$(selector);
    return h && { textContent: () => h.evaluate((e) => e.textContent) };
  }
  $$(selector) {
    return this.p.$$(selector);
  }
  $eval(selector, fn, arg) {
    return this.p.$eval(selector, fn, arg);
  }
  evaluate(fn, arg) {
    return this.p.evaluate(fn, arg);
  }
  setViewportSize({ width, height }) {
    return this.p.setViewport({ width, height });
  }
  screenshot({ path: file, fullPage }) {
    return this.p.screenshot({ path: file, fullPage });
  }
}
