// Summarises http-cache-tests results per kind (required/optimal/check),
// the way cache-tests.fyi counts them (dependencies honoured), for perfproxy
// and for the published results shipped with the suite.
// Usage: node cache-conformance-summary.mjs <suite dir> <results.json>
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile] = process.argv.slice(2)
const load = p => import(pathToFileURL(path.join(suiteDir, p)).href)
const tests = (await load('tests/index.mjs')).default
tests.push((await load('tests/surrogate-control.mjs')).default)
const display = await load('lib/display.mjs')

function summarise (results) {
  const counts = {}
  const failures = []
  for (const suite of tests) {
    for (const test of suite.tests) {
      const kind = test.kind || 'required'
      const r = display.determineTestResult(tests, test.id, results)
      const symbol = r[2]
      counts[kind] = counts[kind] || {}
      counts[kind][symbol] = (counts[kind][symbol] || 0) + 1
      if (kind === 'required' && symbol !== '✅' && symbol !== '-') {
        failures.push(`${symbol} ${test.id}: ${test.name} ${JSON.stringify((results[test.id] || [])[1] || '')}`)
      }
    }
  }
  return { counts, failures }
}

const ours = summarise(JSON.parse(fs.readFileSync(resultsFile, 'utf8')))
console.log('perfproxy:', JSON.stringify(ours.counts))
for (const name of ['nginx', 'varnish', 'trafficserver', 'apache', 'squid']) {
  const file = path.join(suiteDir, 'results', `${name}.json`)
  if (fs.existsSync(file)) {
    const s = summarise(JSON.parse(fs.readFileSync(file, 'utf8')))
    console.log(`${name}: required passed ${s.counts.required['✅'] || 0}`)
  }
}
console.log(`perfproxy: required passed ${ours.counts.required['✅'] || 0}`)
console.log('required, not passed:')
for (const f of ours.failures) console.log('  ' + f)
