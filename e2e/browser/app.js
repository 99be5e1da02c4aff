// The test page's app: what a single-page app behind the sidecar does with
// the browser SDK. It reads the sidecar's browser config (served at
// browser.config_path and loaded by a <script> before this bundle), starts
// @sentry/browser with it, leaves a trail of breadcrumbs and fails when the
// "Deploy" button is clicked. run.mjs drives it in Chromium.
//
// URL parameters (set by the Go test through run.mjs):
//   failure=TEXT  the error message's unique part, so the test finds its event
//   replay=1      adds the session replay integration
//   evil=1        calls Sentry.setUser with a forged user, which the sidecar
//                 must replace with the verified one when a token is sent
// The API token, if any, is in localStorage (as a logged-in app keeps it);
// the SDK sends it to the tunnel so the sidecar can name the verified user.
import * as Sentry from "@sentry/browser";

const tokenKey = "sentry-sidecar-e2e.token";

function start() {
  const config = window.SENTRY_SIDECAR;
  if (!config || typeof config !== "object") {
    throw new Error("window.SENTRY_SIDECAR is missing: the sidecar's browser config did not load");
  }
  const params = new URLSearchParams(window.location.search);
  const failure = params.get("failure") || "no failure id";
  const token = window.localStorage.getItem(tokenKey);

  Sentry.init({
    ...config,
    integrations:
      params.get("replay") === "1"
        ? [Sentry.replayIntegration({ maskAllText: true, blockAllMedia: true })]
        : [],
    // A custom header makes a cross-origin post need a preflight; the
    // tunnel is same-origin here, so it does not.
    transportOptions: token ? { headers: { Authorization: "Bearer " + token } } : undefined,
  });
  if (params.get("evil") === "1") {
    Sentry.setUser({ id: "evil", username: "mallory", email: "mallory@example.com" });
  }

  // A console breadcrumb, and a ui.click one when the button is clicked.
  console.log("e2e: app ready, failure " + failure);
  const button = document.getElementById("deploy");
  button.addEventListener("click", function deployClicked() {
    document.getElementById("status").textContent = "deploying";
    console.warn("e2e: deploy clicked, failing next");
    failDeploy(failure);
  });

  window.__e2e = {
    ready: true,
    // Waits for every envelope the SDK has queued (run.mjs calls it).
    flush: (ms) => Sentry.flush(ms),
    replayId: () => Sentry.getReplay()?.getReplayId() ?? null,
  };
}

// failDeploy throws from a named function of its own, so the event's stack
// has a frame the test can find.
function failDeploy(failure) {
  throw new Error("e2e: deliberate browser failure " + failure);
}

try {
  start();
} catch (err) {
  window.__e2e = { ready: false, error: String(err && err.stack ? err.stack : err) };
  throw err;
}
