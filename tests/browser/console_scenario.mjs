// End-to-end scenario of the exporter console in headless Chromium (Debian's `chromium`),
// driven by playwright-core. Started by tests/browser/test_console.py against a real
// `exporter-api serve` on the bundled demo.
//
// Environment: BASE_URL (required), ARTIFACTS_DIR (screenshots, default test-artifacts),
// DOCS_SCREENSHOT (optional path: also save the finished g-sales run there),
// CHROMIUM (default /usr/bin/chromium).
//
// Exit code 0 when every step passed; on failure a screenshot of the page is left in
// ARTIFACTS_DIR/failure.png and the error is printed.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { chromium } = await import(join(root, 'node_modules', 'playwright-core', 'index.mjs'));

const BASE_URL = process.env.BASE_URL;
if (!BASE_URL) throw new Error('BASE_URL is required');
const ARTIFACTS = resolve(process.env.ARTIFACTS_DIR ?? join(root, 'test-artifacts'));
const DOCS_SCREENSHOT = process.env.DOCS_SCREENSHOT;
// The server's access-token lifetime when the test shortened it: the scenario then outlives
// several tokens and checks that the console refreshed them on its own.
const TOKEN_TTL_S = Number(process.env.TOKEN_TTL_S ?? 0);
const FINAL = ['Success', 'NoData', 'Failed', 'Cancelled'];
const started = Date.now();

mkdirSync(ARTIFACTS, { recursive: true });
const log = (step) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${step}`);

const profile = mkdtempSync(join(tmpdir(), 'console-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  viewport: { width: 1360, height: 1000 },
  acceptDownloads: true,
  locale: 'en-US',
  timezoneId: 'UTC',
});
context.setDefaultTimeout(20_000);
// Test hooks: remember the page's WebSockets (to cut the live connection) and every state the
// connection banner showed.
await context.addInitScript(() => {
  const NativeWebSocket = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
  window.__bannerSeen = [];
  document.addEventListener('DOMContentLoaded', () => {
    const banner = document.getElementById('connection-banner');
    new MutationObserver(() => {
      if (!banner.hidden) window.__bannerSeen.push(banner.dataset.state);
    }).observe(banner, { attributes: true });
  });
});
const page = context.pages()[0] ?? await context.newPage();
const refreshes = []; // times of successful POST /api/auth/refresh
page.on('response', (response) => {
  if (response.url().endsWith('/api/auth/refresh') && response.status() === 200) refreshes.push(Date.now());
});
const consoleErrors = [];
page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
page.on('pageerror', (error) => consoleErrors.push(String(error)));

const byTestId = (id, attrs = {}) => page.locator(
  `[data-testid="${id}"]${Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('')}`);

/** Waits until every run/group/script/variant status badge on the page shows a final status. */
async function waitAllFinal(timeout) {
  await page.waitForFunction((final) => {
    const badges = document.querySelectorAll(
      '#run-status, [data-testid="group-status"], [data-testid="script-status"], [data-testid="variant-status"]');
    return badges.length > 1 && [...badges].every((badge) => final.includes(badge.textContent));
  }, FINAL, { timeout });
}

async function statuses(testId) {
  return byTestId(testId).evaluateAll((badges) => badges.map((badge) => ({
    group: badge.dataset.groupId, script: badge.dataset.scriptId, variant: badge.dataset.variant,
    status: badge.textContent,
  })));
}

async function rowsOf(scriptId) {
  const text = await byTestId('script-metrics', { 'script-id': scriptId }).textContent();
  return Number(/^([\d,]+) rows/.exec(text)?.[1].replaceAll(',', '') ?? -1);
}

try {
  // ---- login --------------------------------------------------------------------------------
  log('open the console');
  await page.goto(`${BASE_URL}/`);
  await byTestId('login-form').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#login-database option').length > 0);
  await page.selectOption('#login-database', 'db-test');
  await page.selectOption('#login-manager', 'm1');
  await page.selectOption('#login-stream', 's1');
  await page.getByLabel('Database user').fill('USER1');
  await page.getByLabel('Password').fill('wrong');
  await byTestId('login-submit').click();
  await byTestId('login-error').getByText('Wrong user name or password').waitFor();
  log('wrong password refused');
  await page.getByLabel('Password').fill('demo');
  await byTestId('login-submit').click();
  await byTestId('catalog-group', { 'group-id': 'g-sales' }).waitFor();
  const loginAt = Date.now();
  assert.match(await byTestId('user-info').textContent(), /USER1 · db-test · m1\/s1/);
  log('signed in as USER1 on db-test m1/s1');

  // ---- g-sales, with a custom column choice for s-orders ---------------------------------------
  const orders = byTestId('catalog-script', { 'group-id': 'g-sales', 'script-id': 's-orders' });
  await orders.getByTestId('export-mode').selectOption('CustomColumns');
  for (const box of await orders.getByTestId('column').all()) {
    const keep = ['order_id', 'customer'].includes(await box.getAttribute('value'));
    await box.setChecked(keep);
  }
  await byTestId('run-group', { 'group-id': 'g-sales' }).click();
  await page.waitForURL(/[?&]run=/);
  const salesRunId = new URL(page.url()).searchParams.get('run');
  await page.locator('#run-id', { hasText: salesRunId }).waitFor();
  log(`g-sales run ${salesRunId} started`);
  await waitAllFinal(60_000);
  const runStatus = await page.locator('#run-status').textContent();
  assert.equal(runStatus, 'Success', 'g-sales run status');
  const groupStatuses = await statuses('group-status');
  assert.deepEqual(groupStatuses.map((s) => [s.group, s.status]), [['g-sales', 'Success']]);
  const scriptStatuses = await statuses('script-status');
  assert.deepEqual(scriptStatuses.map((s) => s.script).sort(), ['s-customers', 's-orders', 's-payments']);
  for (const s of scriptStatuses) assert.equal(s.status, 'Success', `script ${s.script}`);
  const variantStatuses = await statuses('variant-status');
  assert.equal(variantStatuses.length, 9, 'three variants per script');
  const payments3 = variantStatuses.find((v) => v.script === 's-payments' && v.variant === '3');
  assert.equal(payments3?.status, 'NoData', 'payments variant 3 finds nothing');
  assert.ok(variantStatuses.filter((v) => v.status === 'Success').length >= 6);
  log(`every status is final: run ${runStatus}, ${variantStatuses.length} variants`);

  // Files: 8 (payments v3 made none), then download one and check its header.
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="file-link"]').length === 8);
  const orderLink = byTestId('file-link', { 'script-id': 's-orders' }).first();
  // Plain links the browser follows itself: signed (?sig=), never carrying the access token,
  // and sent without an Authorization header (so no file is held in page memory as a blob).
  const token = await page.evaluate(() => window.exporterConsole.api.accessToken());
  const hrefs = await page.locator('[data-testid="file-link"], [data-testid="zip-link"]')
    .evaluateAll((links) => links.map((a) => a.getAttribute('href')));
  assert.equal(hrefs.length, 9, 'eight files and the zip');
  for (const href of hrefs) {
    assert.match(href, /^\/api\/runs\/[0-9A-Z]{26}\/(files\/[\w-]+|files\.zip)\?sig=[\w-]+$/, href);
    assert.ok(!href.includes(token) && !href.includes(token.split('.')[2]), 'no token in a link');
  }
  const downloadRequests = [];
  const onRequest = (request) => {
    if (request.url().includes('?sig=')) downloadRequests.push(request.headers().authorization ?? null);
  };
  page.on('request', onRequest);
  const [download] = await Promise.all([page.waitForEvent('download'), orderLink.click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  assert.equal(csv.split(/\r?\n/)[0], 'OrderId,Customer', 'CustomColumns header, profile labels in order');
  assert.ok(csv.split(/\r?\n/).filter(Boolean).length > 1, 'the file has data rows');
  assert.match(download.suggestedFilename(), new RegExp(`^${salesRunId}_g-sales_s-orders_v\\d\\.csv$`));
  log(`downloaded ${download.suggestedFilename()}: header ${csv.split(/\r?\n/)[0]}`);
  const customersLink = byTestId('file-link', { 'script-id': 's-customers' }).first();
  const [download2] = await Promise.all([page.waitForEvent('download'), customersLink.click()]);
  const header2 = readFileSync(await download2.path(), 'utf8').split(/\r?\n/)[0];
  assert.equal(header2, 'CustomerId,Name,City,Orders,Total', 'AllColumns: every profile label');
  const [zip] = await Promise.all([page.waitForEvent('download'), byTestId('zip-link').click()]);
  const zipBytes = readFileSync(await zip.path());
  assert.equal(zipBytes.subarray(0, 2).toString('latin1'), 'PK', 'the zip of all files');
  log(`zip of all files: ${zipBytes.length} bytes`);
  page.off('request', onRequest);
  // A link about to expire is swapped for a fresh one before the browser follows it.
  const staleHref = await orderLink.getAttribute('href');
  await page.evaluate(() => { window.exporterConsole.model.linksExpireAt = Date.now(); });
  const [download3] = await Promise.all([page.waitForEvent('download'), orderLink.click()]);
  assert.equal(readFileSync(await download3.path(), 'utf8'), csv, 'the same file through a fresh link');
  assert.notEqual(await orderLink.getAttribute('href'), staleHref, 'the links were re-issued');
  // (Chromium reports the first download's request to the page; that is enough to check.)
  assert.ok(downloadRequests.length >= 1 && downloadRequests.every((auth) => auth === null),
    `signed downloads go without an Authorization header: ${JSON.stringify(downloadRequests)}`);

  assert.ok(await page.locator('#error-banner').isHidden(),
    `no error banner (${await page.locator('#error-text').textContent()})`);
  const shot = join(ARTIFACTS, 'console-g-sales.png');
  await page.screenshot({ path: shot, fullPage: true });
  if (DOCS_SCREENSHOT) {
    mkdirSync(dirname(resolve(DOCS_SCREENSHOT)), { recursive: true });
    copyFileSync(shot, DOCS_SCREENSHOT);
  }
  log('screenshot saved');
  await byTestId('recent-run', { 'run-id': salesRunId }).waitFor();

  // ---- one script (SingleScript), and "Run selected" (AllGroups) with a partial selection -----
  await byTestId('run-script', { 'group-id': 'g-sales', 'script-id': 's-customers' }).click();
  await page.waitForFunction((previous) => new URL(location.href).searchParams.get('run') !== previous, salesRunId);
  const singleRunId = new URL(page.url()).searchParams.get('run');
  await page.locator('#run-id', { hasText: singleRunId }).waitFor();
  await waitAllFinal(30_000);
  assert.equal(await page.locator('#run-mode').textContent(), 'SingleScript');
  assert.deepEqual((await statuses('script-status')).map((s) => [s.script, s.status]), [['s-customers', 'Success']]);
  log(`SingleScript run ${singleRunId}: s-customers Success`);

  await byTestId('catalog-group', { 'group-id': 'g-big' }).getByTestId('group-enabled').setChecked(false);
  for (const script of ['s-orders', 's-customers']) {
    await byTestId('catalog-script', { 'script-id': script }).getByTestId('script-enabled').setChecked(false);
  }
  await byTestId('run-all').click();
  await page.waitForFunction((previous) => new URL(location.href).searchParams.get('run') !== previous, singleRunId);
  const allRunId = new URL(page.url()).searchParams.get('run');
  await page.locator('#run-id', { hasText: allRunId }).waitFor();
  await waitAllFinal(30_000);
  assert.equal(await page.locator('#run-mode').textContent(), 'AllGroups');
  assert.deepEqual((await statuses('script-status')).map((s) => [s.script, s.status]), [['s-payments', 'Success']]);
  assert.deepEqual((await statuses('variant-status')).map((v) => v.status), ['Success', 'Success', 'NoData']);
  await byTestId('catalog-group', { 'group-id': 'g-big' }).getByTestId('group-enabled').setChecked(true);
  log('AllGroups run of the ticked script only: s-payments Success (variant 3 NoData)');

  if (TOKEN_TTL_S) {
    // Outlive the first access token (and the server's 5 s leeway): the page keeps working with
    // tokens it refreshed in the background, and the hub connection opened at login (whose token
    // is now stale) is renewed when the next run is subscribed.
    await page.waitForFunction((at) => Date.now() > at, loginAt + (TOKEN_TTL_S + 6) * 1000,
      { timeout: (TOKEN_TTL_S + 10) * 1000 });
    const background = refreshes.filter((t) => t > loginAt).length;
    assert.ok(background >= 1, 'the access token was refreshed before it expired, without a reload');
    log(`${background} background token refresh(es) since login`);
  }

  // ---- g-big: reload in the middle, then cancel --------------------------------------------
  await byTestId('run-group', { 'group-id': 'g-big' }).click();
  await page.waitForFunction((previous) => new URL(location.href).searchParams.get('run') !== previous, allRunId);
  const bigRunId = new URL(page.url()).searchParams.get('run');
  await page.locator('#run-id', { hasText: bigRunId }).waitFor();
  await page.waitForFunction(() => {
    const metrics = document.querySelector('[data-testid="script-metrics"][data-script-id="s-ledger"]');
    return Number(/^([\d,]+) rows/.exec(metrics?.textContent ?? '')?.[1].replaceAll(',', '') ?? 0) > 0;
  });
  await byTestId('script-message', { 'script-id': 's-ledger' }).getByText(/Executing variant 1\/1/).waitFor();
  const rowsBefore = await rowsOf('s-ledger');
  assert.equal(await page.locator('#run-status').textContent(), 'Running');
  log(`g-big run ${bigRunId} running, ${rowsBefore} rows so far; reloading`);

  const reloadAt = Date.now();
  await page.reload();
  await page.locator('#run-id', { hasText: bigRunId }).waitFor();
  await page.locator('#run-status', { hasText: 'Running' }).waitFor();
  await page.waitForFunction((before) => {
    const metrics = document.querySelector('[data-testid="script-metrics"][data-script-id="s-ledger"]');
    return Number(/^([\d,]+) rows/.exec(metrics?.textContent ?? '')?.[1].replaceAll(',', '') ?? 0) > before;
  }, rowsBefore);
  assert.equal(await byTestId('script-status', { 'script-id': 's-ledger' }).textContent(), 'Running');
  const rowsAfter = await rowsOf('s-ledger');
  await page.screenshot({ path: join(ARTIFACTS, 'console-g-big-running.png') });
  log(`after the reload the live state is back: ${rowsAfter} rows and growing`);

  // Cut the live connection: the banner shows, the client reconnects and subscribes again.
  const cut = await page.evaluate(() => {
    const open = window.__sockets.filter((socket) => socket.readyState === WebSocket.OPEN);
    for (const socket of open) socket.close();
    return open.length;
  });
  assert.ok(cut >= 1, 'the console talks to the hub over a WebSocket');
  await page.waitForFunction(() => window.__bannerSeen.includes('reconnecting'));
  await byTestId('connection-banner').waitFor({ state: 'hidden' });
  const rowsReconnected = await rowsOf('s-ledger');
  await page.waitForFunction((before) => {
    const metrics = document.querySelector('[data-testid="script-metrics"][data-script-id="s-ledger"]');
    return Number(/^([\d,]+) rows/.exec(metrics?.textContent ?? '')?.[1].replaceAll(',', '') ?? 0) > before;
  }, rowsReconnected);
  log(`connection cut and restored (banner: ${await page.evaluate(() => window.__bannerSeen.join(','))}); rows still growing`);

  await byTestId('cancel-run').click();
  await page.locator('#run-status', { hasText: 'Cancelled' }).waitFor();
  await byTestId('script-status', { 'script-id': 's-ledger', 'group-id': 'g-big' }).getByText('Cancelled').waitFor();
  await byTestId('group-status', { 'group-id': 'g-big' }).getByText('Cancelled').waitFor();
  assert.ok(await byTestId('cancel-run').isHidden(), 'no cancel button on a finished run');
  await page.screenshot({ path: join(ARTIFACTS, 'console-g-big-cancelled.png'), fullPage: true });
  log('g-big cancelled');
  assert.ok(refreshes.some((t) => t > reloadAt), 'the reloaded page got its token from the cookie');

  // ---- the user feed: a run of this user started elsewhere (the API, another session) ------
  // shows up in Recent runs and reaches its end there, with no click on Refresh.
  const elsewhere = await fetch(`${BASE_URL}/api/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ dbUsername: 'USER1', dbPassword: 'demo', databaseId: 'db-test', managerId: 'm1', streamId: 's1' }),
  });
  assert.equal(elsewhere.status, 200);
  const otherToken = (await elsewhere.json()).accessToken;
  const started2 = await fetch(`${BASE_URL}/api/runs`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${otherToken}` },
    body: JSON.stringify({ mode: 'SingleScript', selection: { groups: [{ groupId: 'g-sales', enabled: true,
      scripts: [{ scriptId: 's-orders', enabled: true, exportMode: 'AllColumns' }] }] } }),
  });
  assert.equal(started2.status, 201);
  const apiRunId = (await started2.json()).runId;
  await byTestId('recent-run', { 'run-id': apiRunId }).getByTestId('recent-status')
    .getByText('Success').waitFor({ timeout: 30_000 });
  log(`run ${apiRunId} started through the API appeared in Recent runs and ended Success`);

  // ---- logout ends the session (a reload does not bring it back) ---------------------------
  await byTestId('logout').click();
  await byTestId('login-form').waitFor();
  await page.reload();
  await byTestId('login-form').waitFor();
  assert.ok(await page.locator('#workspace').isHidden());
  log('logged out');

  // Expected: the 401s of the wrong password and of refresh without a session, and the client's
  // report of the WebSocket this scenario closed on purpose.
  const unexpected = consoleErrors.filter((text) =>
    !/status of 401|WebSocket closed with status code: 1005/.test(text));
  assert.deepEqual(unexpected, [], 'no errors in the browser console');
  log(`passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  await page.screenshot({ path: join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(error);
  if (consoleErrors.length) console.error('browser console errors:\n' + consoleErrors.join('\n'));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
