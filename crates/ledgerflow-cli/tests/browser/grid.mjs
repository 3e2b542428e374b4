// The partition grid in a real browser (Debian's chromium, headless):
// each cell's state and colour, a failed cell opening its error, the
// filter, a `<script>` from data staying text, and the page updating
// after a new run without a reload. Run by tests/it/serve.rs with
//   node grid.mjs BASE_URL LEDGERFLOW_BIN CONFIG SCREENSHOT
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const [base, bin, config, screenshot] = process.argv.slice(2);
const fail = (m) => { console.error(`FAIL: ${m}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 420 } });
  page.on("dialog", () => fail("a script from the data ran (a dialog opened)"));
  await page.goto(`${base}/?month=2026-11`);
  const cell = (model, day) => `td[data-model="${model}"][data-day="${day}"]`;
  const state = (model, day) => page.getAttribute(cell(model, day), "data-state");
  const colour = (model, day) =>
    page.$eval(cell(model, day), (td) => getComputedStyle(td).backgroundColor);
  if ((await state("block_daily_metrics", "2026-11-01")) !== "success") fail("day 1 is not success");
  if ((await state("block_daily_metrics", "2026-11-02")) !== "failed") fail("day 2 is not failed");
  if ((await colour("block_daily_metrics", "2026-11-02")) !== "rgb(239, 68, 68)") fail("a failed cell is not red");
  if ((await colour("block_daily_metrics", "2026-11-01")) !== "rgb(34, 197, 94)") fail("a success cell is not green");
  if (screenshot) await page.screenshot({ path: screenshot });

  // A failed cell opens its attempts and error.
  await page.click(`${cell("block_daily_metrics", "2026-11-02")} a`);
  await page.waitForSelector("#attempts");
  if (!(await page.textContent("#attempts")).includes("injected failure")) fail("the failed cell's error is not shown");

  // The filter keeps the rows with a failed cell.
  await page.goto(`${base}/?month=2026-11`);
  await page.click("#filter-failed");
  await page.waitForURL(/filter=failed/);
  if (await page.$(cell("user_activity_agg", "2026-11-01"))) fail("the filter kept a row without failures");
  if (!(await page.$(cell("block_daily_metrics", "2026-11-02")))) fail("the filter hid the failed row");

  // A `<script>` in an error message is shown as text.
  await page.goto(`${base}/cell/xss_probe/2026-11-01`);
  if (!(await page.textContent("#attempts")).includes("<script>alert(1)</script>")) fail("the error text is not shown as text");
  if ((await page.$$("main script")).length !== 0) fail("a script element came from the data");

  // A new run shows up without a reload.
  await page.goto(`${base}/?month=2026-11`);
  await page.evaluate(() => { window.__notReloaded = true; });
  execFileSync(bin, ["--config", config, "run", "--date", "2026-11-02", "--force", "--model", "block_daily_metrics"], { stdio: "ignore" });
  await page.waitForFunction(
    () => window.__notReloaded === true &&
      document.querySelector('td[data-model="block_daily_metrics"][data-day="2026-11-02"]')?.dataset.state === "success",
    null,
    { timeout: 20000 },
  );
  console.log("OK");
} finally {
  await browser.close();
}
