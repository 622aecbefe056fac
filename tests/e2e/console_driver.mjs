// Drives the web console in Debian's chromium for tests/e2e/test_console.py.
//
// One JSON command per stdin line; one JSON answer per stdout line ({"ok":true,...} or
// {"ok":false,"error":...}). Every wait is playwright's own waitFor* with a timeout, never a
// sleep. The browser is headless and sandbox-less (the tests run as root in a container).
//
//   CHROMIUM   the browser binary (default /usr/bin/chromium)
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
const page = await context.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

const eventButton = (message) => page.locator(`#events .event[data-message="${message}"]`);

const commands = {
  /** Load the page, save the credential, connect to the ticked channels. */
  async open({ url, token, timeout }) {
    const response = await page.goto(url);
    await page.fill("#credential", token);
    await page.click("#save-credential");
    await page.click("#connect");
    await page.locator('#status[data-state="connected"]').waitFor({ timeout });
    return {
      status: response.status(),
      csp: response.headers()["content-security-policy"] || "",
      client_id: await page.textContent("#client-id"),
      subscriptions: await page.locator("#subscriptions li > span").allTextContents(),
    };
  },
  /** Load the page and connect with a credential the hub refuses: the page says why. */
  async refused({ url, token, contains, timeout }) {
    await page.goto(url);
    await page.fill("#credential", token);
    await page.click("#save-credential");
    await page.click("#connect");
    await page.locator("#problem", { hasText: contains }).waitFor({ timeout });
    await page.locator("#connect:enabled").waitFor({ timeout });
    return { problem: await page.textContent("#problem") };
  },
  async wait_event({ message, timeout }) {
    await eventButton(message).first().waitFor({ state: "visible", timeout });
    return {};
  },
  async count_event({ message }) {
    return { count: await eventButton(message).count() };
  },
  /** Click the event, read the pretty JSON shown for it. */
  async detail({ message }) {
    await eventButton(message).first().click();
    return { text: await page.textContent("#detail") };
  },
  async unsubscribe({ channel, timeout }) {
    await page.click(`#subscriptions button[data-channel="${channel}"]`);
    await page.locator(`#subscriptions button[data-channel="${channel}"]`).waitFor({ state: "detached", timeout });
    return { subscriptions: await page.locator("#subscriptions li > span").allTextContents() };
  },
  async filter({ text }) {
    await page.fill("#filter", text);
    return { shown: await page.locator("#events li:not([hidden])").count() };
  },
  /** Wait for the resume line to hold `contains` (after a reconnect). */
  async wait_resume({ contains, timeout }) {
    await page.locator("#resume", { hasText: contains }).waitFor({ timeout });
    await page.locator('#status[data-state="connected"]').waitFor({ timeout });
    return { resume: await page.textContent("#resume"), epoch: await page.textContent("#epoch") };
  },
  async admin_visible({ timeout }) {
    await page.locator("#admin-clients tr").first().waitFor({ timeout });
    return { rows: await page.locator("#admin-clients tr").count() };
  },
  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  async logs() {
    return { lines: consoleLines };
  },
};

const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
say({ ok: true, ready: true, browser: browser.version() });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    say({ ok: false, error: `not JSON: ${error.message}` });
    continue;
  }
  if (request.cmd === "quit") break;
  const command = commands[request.cmd];
  if (!command) {
    say({ ok: false, error: `unknown command ${request.cmd}` });
    continue;
  }
  try {
    say({ ok: true, ...(await command(request)) });
  } catch (error) {
    say({ ok: false, error: error.message, console: consoleLines.slice(-20) });
  }
}
await browser.close();
