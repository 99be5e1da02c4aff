// Drives the test page in Debian's Chromium with playwright-core and writes
// what the browser sent and received as JSON. The Go test (browser_test.go)
// runs it as `node run.mjs INPUT.json` and reads the output file it names.
//
// Input: {
//   url:         the page, through the sidecar
//   tunnelPath:  the sidecar's tunnel path
//   token:       an API token to keep in localStorage, or ""
//   waitFor:     item types that must have reached the tunnel (and been
//                answered) before the run ends, e.g. ["event", "replay_recording"]
//   userDataDir: a fresh, empty directory for Chromium's profile
//   output:      where to write the result
//   timeoutMs:   bound on the whole run
// }
// The run fails (exit 1, with the reason in the output's "error") on any
// page error other than the deliberate one, or when a wait times out.
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const chromiumPath = "/usr/bin/chromium";
const tokenKey = "sentry-sidecar-e2e.token";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const out = {
  playwright: createRequire(import.meta.url)("playwright-core/package.json").version,
  chromium: "",
  config: null, // what window.SENTRY_SIDECAR held in the page
  responses: [], // every response the browser got: url, status, headers, body (base64)
  tunnel: [], // every POST to the tunnel: request body (base64), headers, answer
  requests: [], // every URL the browser asked for
  console: [],
  pageErrors: [],
  replayId: null,
  timings: {},
  error: "",
};

const deadline = started + input.timeoutMs;
const remaining = () => Math.max(1, deadline - Date.now());
const mark = (name) => (out.timings[name] = Date.now() - started);

// itemTypes lists the item types of an envelope with the framing rules of
// the protocol: an item with "length" has that many payload bytes (binary
// replay recordings), one without runs to the next newline.
function itemTypes(body) {
  const types = [];
  try {
    let i = body.indexOf(10);
    while (i >= 0 && i + 1 < body.length) {
      const start = i + 1;
      let end = body.indexOf(10, start);
      if (end < 0) end = body.length;
      const header = JSON.parse(body.subarray(start, end).toString("utf8"));
      types.push(header.type);
      i = typeof header.length === "number" ? end + 1 + header.length : body.indexOf(10, end + 1);
      if (i >= body.length) break;
    }
  } catch (err) {
    types.push(`unparsable: ${err}`);
  }
  return types;
}

let context;
try {
  context = await chromium.launchPersistentContext(input.userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    // The flags a closed network needs: no background requests to Google
    // that the machine would refuse, no QUIC, no GPU.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: remaining(),
  });
  mark("launched");
  if (input.token) {
    await context.addInitScript(
      ([key, token]) => window.localStorage.setItem(key, token),
      [tokenKey, input.token],
    );
  }
  const page = context.pages()[0] ?? (await context.newPage());
  // A persistent context has no Browser object to ask; CDP knows.
  const cdp = await context.newCDPSession(page);
  out.chromium = (await cdp.send("Browser.getVersion")).product;
  await cdp.detach();
  const tunnelURL = new URL(input.tunnelPath, input.url).href;
  const pending = new Set();
  const answered = new Set(); // item types in tunnel posts that got an answer

  page.on("console", (msg) => out.console.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => out.pageErrors.push(String(err.stack || err)));
  page.on("request", (req) => {
    out.requests.push(`${req.method()} ${req.url()}`);
    if (req.method() !== "POST" || req.url().split("?")[0] !== tunnelURL) return;
    const body = req.postDataBuffer() ?? Buffer.alloc(0);
    const entry = {
      url: req.url(),
      headers: req.headers(),
      body: body.toString("base64"),
      types: itemTypes(body),
      status: 0,
      responseHeaders: {},
      responseBody: "",
      failure: "",
    };
    out.tunnel.push(entry);
    const done = (async () => {
      const res = await req.response();
      if (!res) {
        entry.failure = req.failure()?.errorText ?? "no response";
        return;
      }
      entry.status = res.status();
      entry.responseHeaders = await res.allHeaders();
      entry.responseBody = (await res.body().catch(() => Buffer.alloc(0))).toString("base64");
      for (const t of entry.types) answered.add(t);
    })().catch((err) => (entry.failure = String(err)));
    pending.add(done);
    done.finally(() => pending.delete(done));
  });
  page.on("requestfailed", (req) => out.requests.push(`FAILED ${req.url()}: ${req.failure()?.errorText}`));
  const reads = new Set();
  page.on("response", (res) => {
    const entry = { url: res.url(), status: res.status(), headers: {}, body: "", unreadable: "" };
    out.responses.push(entry);
    const read = (async () => {
      entry.headers = await res.allHeaders();
      entry.body = (await res.body()).toString("base64");
    })().catch((err) => (entry.unreadable = String(err)));
    reads.add(read);
    read.finally(() => reads.delete(read));
  });

  await page.goto(input.url, { waitUntil: "load", timeout: remaining() });
  await page.waitForFunction(() => window.__e2e && "ready" in window.__e2e, null, { timeout: remaining() });
  const state = await page.evaluate(() => ({ ready: window.__e2e.ready, error: window.__e2e.error ?? "" }));
  if (!state.ready) throw new Error(`the page did not start: ${state.error}`);
  out.config = await page.evaluate(() => window.SENTRY_SIDECAR);
  mark("ready");

  await page.click("#deploy", { timeout: remaining() });
  mark("clicked");

  // Wait until every wanted item type went through the tunnel and was
  // answered; flushing the SDK in between sends what it still holds.
  const wanted = input.waitFor ?? ["event"];
  while (!wanted.every((t) => answered.has(t))) {
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${wanted.filter((t) => !answered.has(t)).join(", ")} through the tunnel; sent: ` +
          JSON.stringify(out.tunnel.map((e) => ({ types: e.types, status: e.status, failure: e.failure }))),
      );
    }
    await page.evaluate((ms) => window.__e2e.flush(ms), Math.min(2000, remaining()));
    await Promise.all([...pending]);
    await new Promise((r) => setTimeout(r, 50));
  }
  out.replayId = await page.evaluate(() => window.__e2e.replayId());
  await page.evaluate((ms) => window.__e2e.flush(ms), Math.min(5000, remaining()));
  await Promise.all([...pending, ...reads]);
  mark("flushed");
} catch (err) {
  out.error = String(err.stack || err);
} finally {
  // Requests still open when the page closes (client reports sent on
  // visibilitychange) are not waited for: the test counts only the items
  // it asked for.
  await context?.close().catch(() => {});
  mark("closed");
}
// The only page error allowed is the deliberate one.
const unexpected = out.pageErrors.filter((e) => !e.includes("e2e: deliberate browser failure"));
if (!out.error && unexpected.length > 0) out.error = "unexpected page errors: " + unexpected.join("\n");
writeFileSync(input.output, JSON.stringify(out, null, 2));
process.exit(out.error ? 1 : 0);
