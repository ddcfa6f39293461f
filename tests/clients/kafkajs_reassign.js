#!/usr/bin/env node
// kafkajs's admin client asks for partition moves and lists them.
//
// Usage: node kafkajs_reassign.js ADDR TOPIC move PARTITION=R1,R2,... [...]
//        node kafkajs_reassign.js ADDR TOPIC list
//
// `move` sends one AlterPartitionReassignments (kafkajs sends it to the
// controller Metadata names) for the given partitions; `list` sends
// ListPartitionReassignments for the topic's partitions and prints the
// answer as JSON on one line: [{partition, replicas, adding, removing}].
// A refused request fails the script with kafkajs's error.
'use strict'

const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [addr, topic, mode, ...rest] = process.argv.slice(2)
  const kafka = new Kafka({ clientId: 'kafkajs-reassign', brokers: [addr], logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  try {
    if (mode === 'move') {
      const partitionAssignment = rest.map(arg => {
        const [partition, replicas] = arg.split('=')
        return { partition: Number(partition), replicas: replicas.split(',').map(Number) }
      })
      await admin.alterPartitionReassignments({ topics: [{ topic, partitionAssignment }] })
      console.log('moved')
    } else if (mode === 'list') {
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
      const partitions = metadata.topics[0].partitions.map(p => p.partitionId)
      const listed = await admin.listPartitionReassignments({ topics: [{ topic, partitions }] })
      const moves = []
      for (const t of listed.topics) {
        for (const p of t.partitions) {
          moves.push({
            partition: p.partition,
            replicas: p.replicas,
            adding: p.addingReplicas,
            removing: p.removingReplicas,
          })
        }
      }
      console.log(JSON.stringify(moves))
    } else {
      throw new Error(`unknown mode ${mode}`)
    }
  } finally {
    await admin.disconnect()
  }
}

main().catch(error => {
  console.error(`kafkajs_reassign: FAIL: ${error.type || ''} ${error.message}`)
  process.exit(1)
})
