// The web console end to end in headless Chromium (tests/integration/test_console.py runs this
// with node; decision 38). playwright-core drives Debian's chromium. The Python test owns the
// broker, the worker and the receiver: this script asks it for each step by writing one JSON
// line {"do": ...} to stdout and reads its JSON answer line from stdin ({"error": ...} fails).
// Progress lines are {"log": ...}; the last line is {"done": true}. Any failure exits 1 with
// the reason on stderr. The protocol and the page watch are in console_lib.mjs.
import { BASE, CSP, WAIT, ask, check, finish, launch, log, say, snap, waitFor, watch } from './console_lib.mjs';

const KEY = process.env.API_KEY;
const EVENT = process.env.EVENT_NAME;
const RECEIVER = process.env.RECEIVER_URL;

const browser = await launch();
const problems = []; // console errors and warnings (a CSP violation is one), page errors, other origins
try {
  const page = await browser.newPage();
  await watch(page, problems);

  // The page, its headers and the key form.
  const resp = await page.goto(`${BASE}/`);
  check(resp.status() === 200, `GET / answered ${resp.status()}`);
  check(resp.headers()['content-security-policy'] === CSP, `CSP header: ${resp.headers()['content-security-policy']}`);
  check(resp.headers()['x-content-type-options'] === 'nosniff', 'nosniff');
  await page.locator('#login').waitFor({ state: 'visible' });
  check(await page.locator('#app').isHidden(), 'the console is hidden before a key is typed');

  // A wrong key: the first call is a 401, the key is dropped and the form comes back.
  await page.fill('#key-input', 'not-a-valid-key-0123456789');
  await page.click('#key-submit');
  await page.locator('#login-error', { hasText: '401' }).waitFor({ timeout: WAIT });
  await page.locator('#login').waitFor({ state: 'visible' });
  check(await page.evaluate(() => sessionStorage.length) === 0, 'a refused key is not kept');
  log('a refused key shows the form again');

  // The right key: kept in sessionStorage, the subscriptions page opens.
  await page.fill('#key-input', KEY);
  await page.click('#key-submit');
  await page.locator('#page-subscriptions').waitFor({ state: 'visible' });
  check(await page.evaluate((key) => Object.values(sessionStorage).includes(key) && sessionStorage.length === 1, KEY),
    'the key is kept in sessionStorage');
  await page.locator('#who[data-mode="admin"]', { hasText: 'admin' }).waitFor({ timeout: WAIT });
  check(await page.locator('#nav-keys').isVisible() && await page.locator('#nav-switch').isVisible() &&
    await page.locator('#sub-tenant').isVisible(), 'an admin key sees the Keys and switch pages and the tenant field');

  // Create a subscription in the page: two attempts, 0.2 s apart, so a failing job dies fast.
  const hostile = '<img src=x onerror="document.title=1"><script>document.title=2</script>';
  await page.fill('#sub-event', EVENT);
  await page.fill('#sub-url', RECEIVER);
  await page.fill('#sub-description', hostile);
  await page.fill('#sub-retry', '{"schedule": [0.2]}');
  await page.click('#sub-submit');
  await page.locator('#secret-value', { hasText: /^whsec_/ }).waitFor({ timeout: WAIT });
  const row = page.locator('#subs-table tbody tr', { hasText: EVENT });
  await row.waitFor({ timeout: WAIT });
  const subId = await row.getAttribute('data-id');
  const shownSecret = await page.textContent('#secret-value');
  await ask({ do: 'created', subscription: subId, secret: shownSecret, description: hostile });
  // API data is text: the hostile description is shown as typed, and became no element.
  check(await row.locator('td[data-field="description"]').textContent() === hostile, 'description shown as text');
  check(await page.locator('#subs-table img, #subs-table script').count() === 0, 'no element from API data');
  check(await page.title() === 'Webhook broker console', 'no injected script ran');
  check(await row.locator('td[data-field="status"]').textContent() === 'active', 'new subscription active');
  log(`created ${subId} in the page`);

  // Trigger from the test: the delivery appears with its attempt log.
  await ask({ do: 'trigger' });
  await page.click('#nav-deliveries');
  const delivered = page.locator(`#jobs-table tbody tr[data-subscription="${subId}"][data-status="delivered"]`);
  await delivered.first().waitFor({ timeout: WAIT });
  const job1 = await delivered.first().getAttribute('data-id');
  await delivered.first().locator('button[data-action="attempts"]').click();
  await page.locator('#attempts-table tbody tr[data-attempt="1"] td[data-field="code"]', { hasText: '200' })
    .waitFor({ timeout: WAIT });
  check(await page.textContent('#detail-id') === job1, 'the detail shows the job clicked');
  await snap(page, 'deliveries');
  log(`delivery ${job1} shown with its attempt`);

  // The receiver fails: the job goes dead and shows in the dead letters with both attempts.
  await ask({ do: 'fail' });
  await page.click('#nav-dead');
  const dead = page.locator(`#dead-table tbody tr[data-subscription="${subId}"][data-status="dead"]`);
  await dead.first().waitFor({ timeout: WAIT });
  const job2 = await dead.first().getAttribute('data-id');
  check(job2 !== job1, 'the dead job is the second one');
  await dead.first().locator('button[data-action="attempts"]').click();
  await page.locator('#attempts-table tbody tr[data-attempt="2"] td[data-field="code"]', { hasText: '500' })
    .waitFor({ timeout: WAIT });
  await snap(page, 'dead-letters');
  log(`dead letter ${job2} shown`);

  // The receiver is fixed; retry from the page; the job is delivered.
  await ask({ do: 'fix' });
  await dead.first().locator('button[data-action="retry"]').click();
  await page.locator('#notice', { hasText: 'queued again' }).waitFor({ timeout: WAIT });
  await page.click('#nav-deliveries');
  await page.locator(`#jobs-table tbody tr[data-id="${job2}"][data-status="delivered"]`).waitFor({ timeout: WAIT });
  await ask({ do: 'delivered', job: job2, requests: 4 });
  await page.click('#nav-dead');
  await page.locator(`#dead-table tbody tr[data-id="${job2}"]`).waitFor({ state: 'detached', timeout: WAIT });
  log('retried from the page and delivered');

  // Recover: another job dies; once the receiver is fixed, recover the subscription's dead jobs.
  await ask({ do: 'fail' });
  await dead.first().waitFor({ timeout: WAIT });
  const job3 = await dead.first().getAttribute('data-id');
  check(job3 !== job2, 'a third job is dead');
  await ask({ do: 'fix' });
  await page.selectOption('#recover-sub', subId);
  await page.click('#recover-submit');
  await page.locator('#recover-progress', { hasText: 'done, 1 of 1' }).waitFor({ timeout: WAIT });
  await page.locator(`#dead-table tbody tr[data-id="${job3}"]`).waitFor({ state: 'detached', timeout: WAIT });
  await ask({ do: 'delivered', job: job3, requests: 7 });
  log('recovered from the page and delivered');

  // The live chart: drawn from successive polls of /api/v0/stats, counting what happened.
  await waitFor(async () => Number(await page.textContent('#total-delivered')) >= 2 &&
    Number(await page.textContent('#total-failed')) >= 2 &&
    Number(await page.getAttribute('#chart', 'data-samples')) >= 3, 'the chart to count the deliveries');
  const points = await page.getAttribute('#chart-delivered', 'points');
  check(points.split(' ').length >= 3, `delivered line drawn: ${points}`);
  check(points.split(' ').some((p) => Number(p.split(',')[1]) < 117), `a delivery rate above 0 drawn: ${points}`);
  log(`chart: ${(await page.textContent('#live .legend')).replace(/\s+/g, ' ').trim()}`);

  // Pause, resume, rotate the secret, edit: from the page, checked through the API.
  await page.click('#nav-subscriptions');
  await row.locator('button[data-action="pause"]').click();
  await page.locator(`#subs-table tbody tr[data-id="${subId}"][data-status="paused"]`).waitFor({ timeout: WAIT });
  check((await ask({ do: 'subscription' })).status === 'paused', 'paused through the API');
  await row.locator('button[data-action="resume"]').click();
  await page.locator(`#subs-table tbody tr[data-id="${subId}"][data-status="active"]`).waitFor({ timeout: WAIT });
  check((await ask({ do: 'subscription' })).status === 'active', 'active through the API');
  log('paused and resumed');

  // The subscription's health: its status endpoint, with the page's own changes in the log.
  await row.locator('button[data-action="health"]').click();
  await page.locator('#sub-detail dd[data-field="health"]', { hasText: 'healthy' }).waitFor({ timeout: WAIT });
  for (const kind of ['created', 'paused', 'resumed', 'attempt']) {
    await page.locator(`#activity-table tbody tr[data-kind="${kind}"]`).first().waitFor({ timeout: WAIT });
  }
  await page.locator('#sub-detail dd[data-field="last-hour"]', { hasText: '3 delivered, 4 failed attempts, 2 dead' })
    .waitFor({ timeout: WAIT });
  await snap(page, 'subscriptions');
  log('health shown');

  await row.locator('button[data-action="rotate"]').click();
  const rotated = await waitFor(async () => {
    const s = await page.textContent('#secret-value');
    return s.startsWith('whsec_') && s !== shownSecret ? s : null;
  }, 'the new secret');
  const after = await ask({ do: 'subscription' });
  check(after.secret === rotated && after.previousSecretExpiresAt, 'rotated through the API');
  log('secret rotated');

  await row.locator('button[data-action="edit"]').click();
  check(await page.inputValue('#sub-retry') === '{"schedule":[0.2]}', 'the edit form holds the settings');
  await page.fill('#sub-description', 'edited in the console');
  await page.click('#sub-submit');
  await row.locator('td[data-field="description"]', { hasText: 'edited in the console' }).waitFor({ timeout: WAIT });
  const edited = await ask({ do: 'subscription' });
  check(edited.description === 'edited in the console' && JSON.stringify(edited.retryPolicy) === '{"schedule":[0.2]}',
    `edited: ${JSON.stringify(edited)}`);
  log('edited');

  // The global switch.
  await page.click('#nav-switch');
  await page.fill('#switch-note', 'console e2e');
  await page.click('#switch-offline');
  await page.locator('#page-switch[data-status="offline"]').waitFor({ timeout: WAIT });
  await page.locator('#switch-badge', { hasText: 'OFFLINE' }).waitFor({ timeout: WAIT });
  check((await ask({ do: 'switch' })).status === 'offline', 'offline through the API');
  await page.click('#switch-online');
  await page.locator('#page-switch[data-status="online"]').waitFor({ timeout: WAIT });
  check((await ask({ do: 'switch' })).status === 'online', 'online through the API');
  log('offline and online');

  // Delete (the confirm dialog is accepted).
  await page.click('#nav-subscriptions');
  await row.locator('button[data-action="delete"]').click();
  await page.locator(`#subs-table tbody tr[data-id="${subId}"]`).waitFor({ state: 'detached', timeout: WAIT });
  await ask({ do: 'deleted' });
  log('deleted');

  // A key that stops working (revoked): the next poll's 401 shows the form again.
  await page.evaluate(() => {
    for (const k of Object.keys(sessionStorage)) sessionStorage.setItem(k, 'revoked-key-0123456789');
  });
  await page.locator('#login-error', { hasText: '401' }).waitFor({ timeout: WAIT });
  check(await page.locator('#app').isHidden() && await page.evaluate(() => sessionStorage.length) === 0,
    'a 401 hides the console and drops the key');
  log('a revoked key shows the form again');

  check(problems.length === 0, `the page logged problems:\n${problems.join('\n')}`);

  // The policy is enforced and the watch above sees it: an inline script added now is refused.
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.injected = true;';
    document.body.append(s);
  });
  await waitFor(async () => problems.some((p) => p.includes('CSP violation: script-src')), 'the CSP violation report');
  check(await page.evaluate(() => window.injected === undefined), 'the inline script did not run');
  log('an inline script is refused by the CSP');
  say({ done: true });
} finally {
  await browser.close();
  finish();
}
