// The console's core flows in a real Chromium: sign in with the one-time password, the
// forced password change, a developer creates a tenant and sees its credentials, the
// language switch (remembered), an operator kicks a connected MQTT client and sees it
// disconnected, and the pages fit a phone-sized screen.
// Usage: node core.mjs BASE OPERATOR OPERATOR_PASSWORD DEVELOPER DEVELOPER_PASSWORD CLIENT_ID SHOT_DIR
import { launch, clickAndWait, signIn, changePassword, check, until, step, shot, postForm } from "./lib.mjs";

const [base, opUser, opPass, devUser, devPass, clientId, dir] = process.argv.slice(2);
const browser = await launch();
let failed = false;
try {
  // --- developer: first sign-in, forced change, a tenant with its credentials ---
  const ctx = await browser.newContext({ locale: "en-US" });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  await step(page, dir, "unauthenticated-redirect", async () => {
    await page.goto(`${base}/console/tenants`);
    check(page.url().includes("/console/signin"), `expected the sign-in page, got ${page.url()}`);
  });
  await step(page, dir, "wrong-password", async () => {
    await signIn(page, base, devUser, "not-the-password");
    check((await page.textContent("#signin-error")).includes("Wrong"), "wrong password shown next to the field");
  });
  await step(page, dir, "forced-password-change", async () => {
    await signIn(page, base, devUser, devPass);
    check(page.url().endsWith("/console/password"), `first sign-in goes to the password page, got ${page.url()}`);
    check(await page.isVisible("#forced-notice"), "forced change notice");
    // Anything else redirects back here until the password is changed.
    await page.goto(`${base}/console/tenants`);
    check(page.url().endsWith("/console/password"), "still forced");
    await changePassword(page, devPass, "dev-new-password-1");
    check(page.url().endsWith("/console/tenants"), `developer lands on tenants, got ${page.url()}`);
  });
  await step(page, dir, "create-tenant", async () => {
    await clickAndWait(page, "#new-tenant");
    await page.fill("#tenant-name", "");
    await page.$eval("#tenant-name", (e) => e.removeAttribute("required"));
    await clickAndWait(page, "#tenant-submit");
    check(await page.isVisible("#name-error"), "empty name refused next to the field");
    await page.fill("#tenant-name", "Acme Browser Co");
    await clickAndWait(page, "#tenant-submit");
    const secret = (await page.textContent("#new-app-secret")).trim();
    const key = (await page.textContent("#new-app-key")).trim();
    check(/^[0-9a-f]{32}$/.test(secret), `app secret shown once: ${secret}`);
    check(key.length > 0, "app key shown");
    await clickAndWait(page, "#to-tenant");
    check((await page.textContent("#tenant-title")).includes("Acme Browser Co"), "tenant page");
    check((await page.textContent("#app-key")).trim() === key, "same app key on the tenant page");
    const masked = (await page.textContent("#app-secret")).trim();
    check(!masked.includes(secret) && masked.startsWith(secret.slice(0, 4)), `secret masked afterwards: ${masked}`);
    check(/^\d{8}$/.test((await page.textContent("#buin")).trim()), "enterprise number shown");
  });
  await step(page, dir, "csrf-required", async () => {
    const r = await postForm(page, "/console/tenants/new", { name: "no token" }, { withCsrf: false });
    check(r.status === 403, `POST without CSRF token: ${r.status}`);
  });
  await step(page, dir, "language-switch", async () => {
    await clickAndWait(page, "#lang-switch");
    check((await page.textContent("nav")).includes("租户"), "Chinese navigation");
    await page.reload();
    check((await page.textContent("nav")).includes("租户"), "language remembered after reload");
    check((await page.getAttribute("html", "lang")) === "zh", "html lang");
    await clickAndWait(page, "#lang-switch");
    check((await page.textContent("nav")).includes("Tenants"), "back to English");
  });
  await shot(page, dir, "tenant");
  await ctx.close();

  // --- operator: overview, kick a connected client, phone width ---
  const octx = await browser.newContext({ locale: "en-US" });
  const op = await octx.newPage();
  op.setDefaultTimeout(20000);
  op.on("dialog", (d) => d.accept());
  await step(op, dir, "operator-sign-in", async () => {
    await signIn(op, base, opUser, opPass);
    await changePassword(op, opPass, "operator-new-password-1");
    check(op.url().endsWith("/console/ops"), `operator lands on the overview, got ${op.url()}`);
    check(await op.isVisible("#chart-connections svg"), "connections chart");
    check(Number(await op.textContent("#tile-connections")) >= 1, "at least the test client is connected");
    await shot(op, dir, "overview");
  });
  await step(op, dir, "kick-client", async () => {
    await op.goto(`${base}/console/ops/clients?q=${encodeURIComponent(clientId)}`);
    const row = `tr[data-client="${clientId}"]`;
    check((await op.textContent(`${row} .state`)).includes("online"), "client listed online");
    await clickAndWait(op, `${row} .kick`);
    check((await op.textContent("#kicked")).includes(clientId), "kick confirmed");
    await until(async () => {
      await op.goto(`${base}/console/ops/clients?q=${encodeURIComponent(clientId)}`);
      const state = await op.$(`${row} .state`);
      return state === null || !(await state.textContent()).includes("online");
    }, "the client to be disconnected");
  });
  await step(op, dir, "phone-width", async () => {
    await op.setViewportSize({ width: 375, height: 740 });
    for (const p of ["/console/ops", "/console/ops/clients"]) {
      await op.goto(`${base}${p}`);
      const fits = await op.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
      check(fits, `${p} fits 375 px`);
    }
    check(await op.isVisible(".burger"), "menu button on a phone");
    await op.click(".burger");
    check(await op.isVisible("nav a[href='/console/ops/clients']"), "menu opens");
    await shot(op, dir, "phone");
  });
  await octx.close();
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
