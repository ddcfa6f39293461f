// Transactions with @platformatic/kafka, an independent Node.js protocol
// implementation: it adds partitions with AddPartitionsToTxn in its batched
// form (v4-5) and ends transactions with EndTxn v4 (the classic protocol).
// Commit, abort, commit, each of MESSAGES records over 3 partitions; then a
// second instance with the same transactional id fences the first (and
// commits one record), whose open transaction's commit must fail. Prints "committed <value>" and
// "aborted <value>" per record, then "fenced <error>".
//
// usage: node platformatic_transactions.mjs HOST:PORT TOPIC MESSAGES

import { Producer, stringSerializers } from '@platformatic/kafka'

const [broker, topic, countArg] = process.argv.slice(2)
const count = Number(countArg)
if (!broker || !topic || !(count > 0)) {
  console.error('usage: platformatic_transactions.mjs HOST:PORT TOPIC MESSAGES')
  process.exit(2)
}

function producer (name) {
  return new Producer({
    clientId: `sluice-test-${name}`,
    bootstrapBrokers: [broker],
    serializers: stringSerializers,
    idempotent: true,
    transactionalId: 'platformatic-txn',
    retries: 5,
    timeout: 20000
  })
}

const lines = []
const first = producer('first')
let second
try {
  for (const [round, commit] of [[0, true], [1, false], [2, true]]) {
    const txn = await first.beginTransaction()
    const values = []
    for (let i = 0; i < count; i++) {
      const value = `r${round}-${i}`
      await txn.send({ messages: [{ topic, partition: i % 3, key: `k${i}`, value }] })
      values.push(value)
    }
    if (commit) {
      await txn.commit()
    } else {
      await txn.abort()
    }
    for (const value of values) lines.push(`${commit ? 'committed' : 'aborted'} ${value}`)
  }
  // An open transaction, then a new instance: the old one is fenced.
  const open = await first.beginTransaction()
  await open.send({ messages: [{ topic, partition: 0, key: 'z', value: 'zombie' }] })
  lines.push('aborted zombie')
  second = producer('second')
  const fresh = await second.beginTransaction()
  await fresh.send({ messages: [{ topic, partition: 1, key: 'f', value: 'fresh' }] })
  await fresh.commit()
  lines.push('committed fresh')
  let fenced = 'none'
  try {
    await open.commit()
  } catch (error) {
    fenced = error.message.replace(/\s+/g, '_')
  }
  lines.push(`fenced ${fenced}`)
  console.log(lines.join('\n'))
} finally {
  await Promise.all([first, second].filter(Boolean).map(p => p.close().catch(() => {})))
}
