// The console's Organisation and Workbench-apps pages in headless Chromium (run from
// tests/tests/console_org.rs): sign in as a tenant administrator (forced password change),
// build a two-level department tree, import members from CSV with one bad row reported,
// create a workbench app with an icon (previewed before upload), show its credentials, send
// a test notice; script typed into fields is shown as text (no dialog ever opens); a POST
// without the CSRF token is refused. Failures keep a screenshot in $SHOTS.
// Usage: node console/org.mjs BASE TENANT USER ONE_TIME_PASSWORD NEW_PASSWORD
// Last stdout line: {"app_id": "..."}.
import { launch, signIn, changePassword, postForm, check, step, shot } from "./lib.mjs";

const [base, tid, user, firstPassword, password] = process.argv.slice(2);
const shots = process.env.SHOTS || ".";
const XSS = "<script>alert(1)</script>";
const XSS_TAG = "<img src=x onerror=alert(1)>"; // department names cannot hold "/"
// A 2x2 PNG.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAEUlEQVR4nGNQSDjwH4QZYAwASvQI/dnllI8AAAAASUVORK5CYII=",
  "base64",
);
const CSV = [
  "account,name,department,title",
  "bea,Bea,Sales/East,Engineer",
  "bad account!,Bob,Sales,",
  "cal,Cal,Sales,Manager",
  "",
].join("\n");

const browser = await launch();
let appId = "";
try {
  const context = await browser.newContext({ locale: "en-US" });
  const page = await context.newPage();
  const dialogs = [];
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  const submit = async (selector) => {
    await Promise.all([page.waitForNavigation(), page.click(selector)]);
  };

  await step(page, shots, "sign-in", async () => {
    await signIn(page, base, user, firstPassword);
    if (page.url().endsWith("/console/password")) {
      await changePassword(page, firstPassword, password);
    }
    await page.goto(`${base}/console/org`);
    check(page.url().endsWith(`/console/org/${tid}`), `the administrator lands on their tenant: ${page.url()}`);
  });

  await step(page, shots, "two-level-tree", async () => {
    await page.fill("#dept-name", "Sales");
    await page.selectOption("#dept-parent", "1");
    await submit("#add-dept-submit");
    await page.fill("#dept-name", "East");
    await page.selectOption("#dept-parent", { label: "/Sales" });
    await submit("#add-dept-submit");
    const tree = await page.textContent("#dept-tree");
    check(tree.includes("/Sales/East"), `the tree shows /Sales/East: ${tree}`);
    await shot(page, shots, "org-tree");
  });

  await step(page, shots, "csv-import", async () => {
    await page.click("#import-link");
    await page.waitForSelector("#import-form");
    const template = await page.request.get(`${base}/console/org/${tid}/template.csv`);
    check(template.ok() && (await template.text()).includes("account,name,department"), "the template downloads");
    await page.setInputFiles("#csv-file", { name: "members.csv", mimeType: "text/csv", buffer: Buffer.from(CSV) });
    await page.fill("#default-password", "Welcome-2026");
    await submit("#import-submit");
    check((await page.textContent("#r-rows")).trim() === "2", "two rows imported");
    check((await page.textContent("#r-rejected")).trim() === "1", "one row rejected");
    const rejected = await page.textContent("#rejected-rows");
    check(rejected.includes("3") && rejected.includes("invalid account"), `line 3 reported with its reason: ${rejected}`);
    await shot(page, shots, "org-import-report");
  });

  await step(page, shots, "script-in-a-department-name", async () => {
    await page.goto(`${base}/console/org/${tid}`);
    await page.fill("#dept-name", XSS_TAG);
    await submit("#add-dept-submit");
    check((await page.textContent("#dept-tree")).includes(XSS_TAG), "shown as text");
    check((await page.$$("#dept-tree img")).length === 0, "no element made of it");
  });

  await step(page, shots, "workbench-app-with-icon", async () => {
    await page.goto(`${base}/console/apps`);
    check(page.url().endsWith(`/console/apps/${tid}`), `apps of the tenant: ${page.url()}`);
    await page.click("#new-app");
    await page.waitForSelector("#app-form");
    // First with a name too long and script in the group: errors next to the fields.
    await page.check("#plat-pc");
    await page.check("#type-pc-web");
    await page.fill("#url_pc", "https://approvals.example.com/");
    await page.check("#embedded-pc");
    await page.fill("#app-name", "费用报销审批流程管理中心系统");
    await page.fill("#app-identifier", "approval");
    await page.fill("#app-group", XSS);
    await submit("#app-submit");
    check(await page.isVisible("#name-error"), "the name error is next to the name");
    check((await page.inputValue("#app-group")) === XSS, "the group is kept, as text");
    await shot(page, shots, "apps-form-errors");
    // Then right, with an icon previewed before upload.
    await page.fill("#app-name", "审批");
    await page.fill("#app-group", "Office");
    await page.fill("#app-category", "Workflow");
    await page.setInputFiles("#app-icon-file", { name: "icon.png", mimeType: "image/png", buffer: PNG });
    await page.waitForFunction(() => document.getElementById("icon-preview").src.startsWith("data:image/png"));
    await submit("#app-submit");
    appId = (await page.textContent("#app-id")).trim();
    check(/^\d+$/.test(appId), `app_id shown: ${appId}`);
    check((await page.textContent("#appkey")).trim().length === 32, "appkey shown");
    check((await page.textContent("#aes-key")).trim().length === 43, "EncodingAESKey shown");
    const iconOk = await page.$eval("#app-icon", (img) => img.complete && img.naturalWidth === 2);
    check(iconOk, "the stored icon loads");
    await shot(page, shots, "apps-app-page");
  });

  await step(page, shots, "test-notice", async () => {
    await page.fill("#notice-to", "bea");
    await page.fill("#notice-text", "Your expense claim was approved");
    await submit("#notice-submit");
    check((await page.textContent("#notice-result")).includes("bea"), "sent to bea");
  });

  await step(page, shots, "csrf-and-dialogs", async () => {
    const r = await postForm(page, `/console/org/${tid}/depts`, { name: "NoCsrf", parent: "1" }, { withCsrf: false });
    check(r.status === 403, `a POST without the CSRF token is refused: ${r.status}`);
    check(dialogs.length === 0, `no script ran: ${dialogs.join(", ")}`);
  });
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify({ app_id: appId }));
