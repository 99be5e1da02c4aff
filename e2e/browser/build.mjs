// Bundles app.js and @sentry/browser into dist/app.js (one IIFE, not
// minified, with an inline source map) for the test page. Run by the Go test
// before each run and by .ci/e2e: `node build.mjs`.
import { build } from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const start = Date.now();
const result = await build({
  absWorkingDir: here,
  entryPoints: [join(here, "app.js")],
  outfile: join(here, "dist", "app.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  minify: false,
  // Names stay as written (deployClicked, failDeploy) so the test can
  // find them in the event's stack.
  keepNames: true,
  sourcemap: false,
  // The SDK's production build; "development" would pick its debug build.
  conditions: ["production"],
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
  metafile: true,
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`e2e/browser: built dist/app.js (${bytes} bytes) in ${Date.now() - start}ms`);
