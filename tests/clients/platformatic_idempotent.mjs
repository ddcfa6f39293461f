// Two idempotent producers of @platformatic/kafka (its own protocol
// implementation; it sends InitProducerId with producer id 0 and epoch 0
// rather than -1/-1) write to one partition, interleaved. Prints one line per
// acknowledged message: "ack <producer> <value> <offset>", then "ids <id0> <id1>".
// The Rust test (tests/producer_identity.rs) reads the partition back and checks
// every acknowledged message is there, at its offset.
//
// usage: node platformatic_idempotent.mjs HOST:PORT TOPIC MESSAGES_PER_PRODUCER

import { Producer, stringSerializers } from '@platformatic/kafka'

const [broker, topic, countArg] = process.argv.slice(2)
const count = Number(countArg)
if (!broker || !topic || !(count > 0)) {
  console.error('usage: platformatic_idempotent.mjs HOST:PORT TOPIC MESSAGES_PER_PRODUCER')
  process.exit(2)
}

function producer (name) {
  return new Producer({
    clientId: `sluice-test-${name}`,
    bootstrapBrokers: [broker],
    serializers: stringSerializers,
    idempotent: true,
    // One retry budget that covers a slow CI machine, never an endless loop.
    retries: 5,
    timeout: 20000
  })
}

const producers = [producer('a'), producer('b')]
const acked = []
try {
  // Interleave the two producers' sends so their batches meet in the partition.
  for (let i = 0; i < count; i++) {
    for (let p = 0; p < producers.length; p++) {
      const value = `p${p}-${i}`
      const result = await producers[p].send({
        messages: [{ topic, partition: 0, key: `k${i}`, value }]
      })
      const offsets = result.offsets ?? []
      if (offsets.length !== 1) {
        throw new Error(`send of ${value}: expected one offset, got ${JSON.stringify(offsets, (_, v) => typeof v === 'bigint' ? v.toString() : v)}`)
      }
      acked.push(`ack ${p} ${value} ${offsets[0].offset.toString()}`)
    }
  }
  const ids = producers.map(p => String(p.producerId))
  console.log(acked.join('\n'))
  console.log(`ids ${ids.join(' ')}`)
} finally {
  await Promise.all(producers.map(p => p.close()))
}
