// What the web console's browser scenarios share (console_e2e.mjs, portal_e2e.mjs; decisions 38
// and 47): the line protocol with the Python test that runs them (one JSON line {"do": ...} on
// stdout per step, its JSON answer on stdin, {"error": ...} fails; progress lines {"log": ...};
// the last line {"done": true}), waiting without sleeps, and a Chromium page watched for
// problems. The Python side is run_e2e in test_console.py.
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

export const BASE = process.env.BROKER_URL; // http://127.0.0.1:<port>
export const WAIT = 20000; // ms for anything the page shows after a poll (the page polls every 2 s)
export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

export function say(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

export function log(text) {
  say({ log: text });
}

// One step done by the Python test: its answer, or an exception when it refused.
export async function ask(obj) {
  say(obj);
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${JSON.stringify(obj)}`);
  const answer = JSON.parse(value);
  if (answer.error) throw new Error(`the test refused ${JSON.stringify(obj)}: ${answer.error}`);
  return answer;
}

// The end: nothing else keeps node running once stdin is closed.
export function finish() {
  input.close();
}

// CONSOLE_SCREENSHOTS=<dir>: a full-page PNG at a few steps, to look at the console.
export async function snap(page, name) {
  if (process.env.CONSOLE_SCREENSHOTS) await page.screenshot({ path: `${process.env.CONSOLE_SCREENSHOTS}/${name}.png`, fullPage: true });
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

export async function waitFor(fn, what, timeout = WAIT) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

// Debian's chromium through playwright-core (PLAYWRIGHT_CORE: its index.mjs; CHROMIUM: the binary).
export async function launch() {
  const { chromium } = await import(pathToFileURL(process.env.PLAYWRIGHT_CORE).href);
  return chromium.launch({ executablePath: process.env.CHROMIUM, args: ['--no-sandbox'] });
}

// Watches a page: problems[] gets every console error or warning (a CSP violation is one), page
// error, request to another origin and answer of 400 or more other than a 401 (the refused keys
// are expected); requests[] gets "METHOD /path?query" of every request to the broker. Dialogs
// (confirmations) are accepted.
export async function watch(page, problems, requests) {
  page.on('console', (m) => {
    // Chromium logs every 4xx as an error: the 401s of the refused keys are expected.
    if (/^Failed to load resource: the server responded with a status of 401\b/.test(m.text())) return;
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(`${BASE}/`)) problems.push(`request to another origin: ${r.url()}`);
    else if (requests) requests.push(`${r.method()} ${r.url().slice(BASE.length)}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && r.status() !== 401) problems.push(`${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  page.on('dialog', (d) => d.accept());
  // Every CSP violation also as a console error (Chromium logs most of them itself).
  await page.addInitScript(() => document.addEventListener('securitypolicyviolation',
    (e) => console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline code'}`)));
}
