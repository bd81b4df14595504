// Classifies conformance results with the suite's own code, so the gateway and
// the published peers are judged by exactly what cache-tests.fyi shows.
//
//   node classify.mjs SUITE_DIR RESULTS.json...
//
// SUITE_DIR is an installed http-cache-tests package. Prints one JSON object:
//   tests:    every test the CLI defines (tests/index.mjs + surrogate-control,
//             as cli.mjs assembles them), with the metadata the scoring needs;
//   peers:    the package's results/index.mjs (published implementations);
//   verdicts: per RESULTS file, test id -> the verdict of the suite's
//             lib/display.mjs determineTestResult (dependencies honoured).
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ...files] = process.argv.slice(2)
const load = rel => import(pathToFileURL(path.join(suiteDir, rel)).href)

const tests = (await load('tests/index.mjs')).default
tests.push((await load('tests/surrogate-control.mjs')).default)
const { determineTestResult } = await load('lib/display.mjs')
const peers = (await load('results/index.mjs')).default

// display.mjs does not export its result types; its third element is a
// unique symbol per type.
const VERDICT = {
  '-': 'untested',
  '✅': 'pass',
  '⛔️': 'fail',
  '⚠️': 'optional_fail',
  Y: 'yes',
  N: 'no',
  '🔹': 'setup_fail',
  '⁉️': 'harness_fail',
  '⚪️': 'dependency_fail',
  '↻': 'retry'
}

const out = { tests: [], peers, verdicts: {} }
for (const suite of tests) {
  for (const test of suite.tests) {
    out.tests.push({
      id: test.id,
      name: test.name,
      suite_id: suite.id,
      suite_name: suite.name,
      kind: test.kind === undefined ? 'required' : test.kind,
      browser_only: test.browser_only === true,
      browser_skip: test.browser_skip === true,
      depends_on: test.depends_on || []
    })
  }
}
for (const file of files) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  const verdicts = {}
  for (const t of out.tests) {
    const symbol = determineTestResult(tests, t.id, results)[2]
    if (!(symbol in VERDICT)) throw new Error(`unknown verdict ${symbol} for ${t.id}`)
    verdicts[t.id] = VERDICT[symbol]
  }
  out.verdicts[file] = verdicts
}
process.stdout.write(JSON.stringify(out))
