// /api/docs in headless Chromium (Debian's `chromium`, driven by playwright-core): Swagger UI
// renders every operation of the served document under the page's Content-Security-Policy, with
// no request leaving the server and no CSP violation. Started by tests/browser/test_api_docs.py.
//
// Environment: BASE_URL (required), SCREENSHOT (optional path), CHROMIUM (default
// /usr/bin/chromium). Exit code 0 when every step passed.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { chromium } = await import(join(root, 'node_modules', 'playwright-core', 'index.mjs'));

const BASE_URL = process.env.BASE_URL;
if (!BASE_URL) throw new Error('BASE_URL is required');

const profile = mkdtempSync(join(tmpdir(), 'api-docs-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  viewport: { width: 1280, height: 1000 },
});
context.setDefaultTimeout(20_000);
const problems = [];
const elsewhere = [];
try {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => { if (!r.url().startsWith(BASE_URL) && !r.url().startsWith('data:')) elsewhere.push(r.url()); });
  await page.exposeFunction('__cspViolation', (text) => problems.push(`CSP: ${text}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const response = await page.goto(`${BASE_URL}/api/docs`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  const document = await (await page.request.get(`${BASE_URL}/api/openapi.json`)).json();
  const expected = Object.values(document.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  await page.locator('.opblock').nth(expected - 1).waitFor();
  assert.equal(await page.locator('.opblock').count(), expected);
  assert.ok(await page.getByText('/api/runs/{runId}/files.zip').first().isVisible());
  // Open one operation: its parameters come from the document (limit 1-100).
  await page.locator('#operations-runs-listRuns button.opblock-summary-control').click();
  await page.getByText('nextCursor of the previous page').waitFor();
  // The Authorize dialog lists the three security schemes.
  await page.locator('button.authorize').click();
  for (const scheme of ['bearer', 'signedLink', 'refreshCookie']) {
    await page.locator('.auth-container h4', { hasText: scheme }).first().waitFor();
  }
  await page.keyboard.press('Escape');
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: false });
  assert.deepEqual(problems, []);
  assert.deepEqual(elsewhere, []);
  console.log(`api docs: ${expected} operations rendered, passed`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
