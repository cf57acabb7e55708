// The tenant portal end to end in headless Chromium (tests/integration/test_portal.py runs this
// with node; decision 47). The Python test owns the broker, the worker, the receiver and the
// API calls of the setup; this script asks it for each step (console_lib.mjs: the protocol and
// the page watch). One tab, four keys in turn: the admin (Keys page), tenant A, tenant B and a
// producer-only key, with Forget key between them.
import { BASE, WAIT, ask, check, finish, launch, log, say, snap, waitFor, watch } from './console_lib.mjs';

const ADMIN_KEY = process.env.API_KEY;
const EVENT = process.env.EVENT_NAME;
const TENANT_A = process.env.TENANT_A;
const TENANT_B = process.env.TENANT_B;

const same = (a, b) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());

const browser = await launch();
const problems = []; // console errors and warnings, page errors, other origins, answers >= 400 but 401
const requests = []; // "METHOD /path" of every call the page made to the broker
try {
  const context = await browser.newContext({ permissions: ['clipboard-read', 'clipboard-write'] });
  const page = await context.newPage();
  await watch(page, problems, requests);

  // Everything in the document, hidden parts included: what another tenant must never find.
  const pageText = () => page.evaluate(() => document.body.textContent);
  // An attribute of each row a selector matches.
  const attrs = (sel, attr = 'data-id') => page.locator(sel).evaluateAll((rows, a) => rows.map((r) => r.getAttribute(a)), attr);

  async function login(key) {
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
    await page.fill('#key-input', key);
    await page.click('#key-submit');
  }

  async function forget() {
    await page.click('#forget-key');
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
  }

  await page.goto(`${BASE}/`);

  // --- the admin: make A's key in the page, see the others, revoke one -----------------------
  await login(ADMIN_KEY);
  await page.locator('#who[data-mode="admin"]').waitFor({ timeout: WAIT });
  await page.click('#nav-keys');
  await page.locator('#page-keys').waitFor({ state: 'visible', timeout: WAIT });
  await page.check('#key-role-tenant');
  await page.fill('#key-tenant', TENANT_A);
  await page.fill('#key-name', 'portal A');
  await page.click('#key-submit-new');
  const keyA = await waitFor(async () => {
    const k = await page.textContent('#key-value');
    return /^whk_[0-9a-f]{64}$/.test(k) ? k : null;
  }, 'the new key');
  await page.click('#key-copy');
  await page.locator('#key-copy', { hasText: 'Copied' }).waitFor({ timeout: WAIT });
  check(await page.evaluate(() => navigator.clipboard.readText()) === keyA, 'the key was copied to the clipboard');
  const rowA = page.locator('#keys-table tbody tr', { hasText: TENANT_A });
  await rowA.waitFor({ timeout: WAIT });
  check(await rowA.locator('td[data-field="roles"]').textContent() === 'tenant', 'A\'s key listed with its role');
  check(!(await rowA.textContent()).includes(keyA.slice(12)), 'the listing shows the prefix only');
  log("admin made A's key in the page");

  const setup = await ask({ do: 'setup', keyA });
  const { urls, subs, dead } = setup;
  // The others made through the API appear at the next refresh; the spare one is revoked here.
  await page.locator('#keys-table tbody tr', { hasText: TENANT_B }).waitFor({ timeout: WAIT });
  await page.locator(`#keys-table tbody tr[data-id="${setup.spare}"] button[data-action="revoke"]`).click();
  await page.locator(`#keys-table tbody tr[data-id="${setup.spare}"][data-revoked="yes"]`).waitFor({ timeout: WAIT });
  await ask({ do: 'revoked', id: setup.spare });
  await snap(page, 'keys');
  log('the admin sees the Keys list and revoked a key');

  await page.click('#nav-subscriptions');
  for (const [name, id] of Object.entries(subs)) {
    const tenant = { a: TENANT_A, b: TENANT_B, g: 'global' }[name[0]];
    await page.locator(`#subs-table tbody tr[data-id="${id}"] td[data-field="tenant"]`, { hasText: tenant })
      .waitFor({ timeout: WAIT });
  }
  log("the admin sees every tenant's endpoints");
  await forget();
  check(!(await pageText()).includes(urls['a-ok']), 'Forget key emptied the pages');

  // Only the URLs of `own` ('a' or 'b') may be anywhere in the page.
  async function onlyOwn(own) {
    const text = await pageText();
    for (const [name, url] of Object.entries(urls)) {
      if (name[0] !== own) check(!text.includes(url), `${url} is not in the page of tenant ${own}`);
    }
  }

  // --- tenant A: its portal ------------------------------------------------------------------
  let mark = requests.length;
  await login(keyA);
  await page.locator('#who[data-mode="tenant"]', { hasText: TENANT_A }).waitFor({ timeout: WAIT });
  check(await page.textContent('#title') === 'Webhook portal', 'the portal\'s title');
  for (const sel of ['#nav-keys', '#nav-switch', '#switch-badge', '#sub-tenant', '#page-keys', '#page-switch']) {
    check(await page.locator(sel).isHidden(), `${sel} is hidden for a tenant key`);
  }
  const aSubs = [subs['a-ok'], subs['a-fail']];
  await waitFor(async () => same(await attrs('#subs-table tbody tr[data-id]'), aSubs), 'A\'s two endpoints');
  await page.locator(`#subs-table tbody tr[data-id="${subs['a-ok']}"] td[data-field="health"]`, { hasText: 'healthy' })
    .waitFor({ timeout: WAIT });
  check(await page.textContent(`#subs-table tbody tr[data-id="${subs['a-fail']}"] td[data-field="health"]`) !== '?',
    'the failing endpoint\'s health is shown');
  await onlyOwn('a');

  // Register an endpoint from the portal: it lands in A.
  await page.fill('#sub-event', EVENT);
  await page.fill('#sub-url', urls['a-new']);
  await page.click('#sub-submit');
  await page.locator('#secret-value', { hasText: /^whsec_/ }).waitFor({ timeout: WAIT });
  const newRow = page.locator('#subs-table tbody tr', { hasText: urls['a-new'] });
  await newRow.waitFor({ timeout: WAIT });
  const newId = await newRow.getAttribute('data-id');
  await ask({ do: 'tenant-created', id: newId, event: EVENT, secret: await page.textContent('#secret-value') });
  await snap(page, 'portal-a');
  log('A registered an endpoint that landed in A');

  // Its deliveries: the two jobs of A's event, none of B's or the global ones.
  await page.click('#nav-deliveries');
  await page.locator(`#jobs-table tbody tr[data-id="${dead.a}"]`).waitFor({ timeout: WAIT });
  const jobSubs = await attrs('#jobs-table tbody tr[data-id]', 'data-subscription');
  check(same(jobSubs, aSubs), `A's deliveries only: ${jobSubs}`);
  await onlyOwn('a');

  // Its dead letter: retried from the page once the endpoint answers again.
  await page.click('#nav-dead');
  const deadRow = page.locator(`#dead-table tbody tr[data-id="${dead.a}"]`);
  await deadRow.waitFor({ timeout: WAIT });
  check(same(await attrs('#dead-table tbody tr[data-id]'), [dead.a]), 'A\'s dead letter only');
  await onlyOwn('a');
  await deadRow.locator('button[data-action="attempts"]').click();
  await page.locator('#attempts-table tbody tr[data-attempt="2"] td[data-field="code"]', { hasText: '500' })
    .waitFor({ timeout: WAIT });
  log('tenant A sees only its own');
  await ask({ do: 'fix', endpoint: 'a-fail' });
  await deadRow.locator('button[data-action="retry"]').click();
  await page.locator('#notice', { hasText: 'queued again' }).waitFor({ timeout: WAIT });
  await ask({ do: 'delivered', job: dead.a });
  await deadRow.waitFor({ state: 'detached', timeout: WAIT });
  log('A retried its dead letter from the page');

  // Rotate a secret: the new one is shown once, and is the subscription's.
  await page.click('#nav-subscriptions');
  const okRow = page.locator(`#subs-table tbody tr[data-id="${subs['a-ok']}"]`);
  const shown = await page.textContent('#secret-value');
  await okRow.locator('button[data-action="rotate"]').click();
  const rotated = await waitFor(async () => {
    const s = await page.textContent('#secret-value');
    return s.startsWith('whsec_') && s !== shown ? s : null;
  }, 'the new secret');
  check((await page.textContent('#secret-sub')).includes(subs['a-ok']), 'the secret box names the endpoint');
  await ask({ do: 'rotated', id: subs['a-ok'], secret: rotated });
  log('A rotated a secret from the page');

  // Its health panel, from GET .../status.
  await okRow.locator('button[data-action="health"]').click();
  await page.locator('#sub-detail dd[data-field="health"]', { hasText: 'healthy' }).waitFor({ timeout: WAIT });
  await page.locator('#activity-table tbody tr[data-kind="attempt"]').first().waitFor({ timeout: WAIT });

  const madeA = requests.slice(mark);
  const notForA = madeA.filter((r) => /^\w+ \/api\/v0\/(admin|keys|trigger-event)/.test(r));
  check(notForA.length === 0, `a tenant key's portal made admin or producer calls: ${notForA}`);
  check(madeA.some((r) => r.startsWith('GET /api/v0/stats?')), 'the chart polls the stats');
  await forget();
  check(!(await pageText()).includes(urls['a-ok']), 'Forget key emptied A\'s pages');

  // --- tenant B: only its own ----------------------------------------------------------------
  await login(setup.keyB);
  await page.locator('#who[data-mode="tenant"]', { hasText: TENANT_B }).waitFor({ timeout: WAIT });
  const bSubs = [subs['b-ok'], subs['b-fail']];
  await waitFor(async () => same(await attrs('#subs-table tbody tr[data-id]'), bSubs), 'B\'s two endpoints');
  await onlyOwn('b');
  await page.click('#nav-deliveries');
  await page.locator(`#jobs-table tbody tr[data-id="${dead.b}"]`).waitFor({ timeout: WAIT });
  check(same(await attrs('#jobs-table tbody tr[data-id]', 'data-subscription'), bSubs), 'B\'s deliveries only');
  await onlyOwn('b');
  await page.click('#nav-dead');
  await page.locator(`#dead-table tbody tr[data-id="${dead.b}"]`).waitFor({ timeout: WAIT });
  check(same(await attrs('#dead-table tbody tr[data-id]'), [dead.b]), 'B\'s dead letter only');
  await onlyOwn('b');
  await snap(page, 'portal-b');
  log('tenant B sees only its own');
  // Recover: B's endpoint answers again; its dead jobs of the last day are sent again.
  await ask({ do: 'fix', endpoint: 'b-fail' });
  await page.selectOption('#recover-sub', subs['b-fail']);
  await page.click('#recover-submit');
  await page.locator('#recover-progress', { hasText: 'done, 1 of 1' }).waitFor({ timeout: WAIT });
  await page.locator(`#dead-table tbody tr[data-id="${dead.b}"]`).waitFor({ state: 'detached', timeout: WAIT });
  await ask({ do: 'delivered', job: dead.b });
  log('B recovered its dead letter from the page');
  await forget();

  // --- a producer-only key: a message, no pages, no calls but whoami --------------------------
  mark = requests.length;
  await login(setup.keyProducer);
  await page.locator('#producer-only').waitFor({ state: 'visible', timeout: WAIT });
  check(await page.locator('#app').isHidden() && await page.locator('#nav').isHidden(), 'no pages for a producer key');
  check((await page.textContent('#producer-only h2')) === 'This key can only trigger events', 'the producer message');
  await page.waitForTimeout(2500); // a poll period: nothing may be polled (an absence, so no flake)
  const madeP = requests.slice(mark);
  check(same(madeP, ['GET /api/v0/whoami']), `a producer key's page made only whoami: ${madeP}`);
  log('a producer key gets the message');

  check(problems.length === 0, `the page logged problems:\n${problems.join('\n')}`);
  say({ done: true });
} finally {
  await browser.close();
  finish();
}
