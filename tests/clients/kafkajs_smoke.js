#!/usr/bin/env node
// kafkajs smoke test against a running broker.
//
// Usage: node kafkajs_smoke.js ADDR TOPIC
//
// admin.createTopics (2 partitions), admin.fetchTopicMetadata, 500 keyed
// messages with acks -1 (one batch GZIP, one batch from an idempotent
// producer, some with headers), admin.fetchTopicOffsets must show high
// watermarks summing to 500, then the messages are read back and checked, and
// finally admin.deleteTopics must make the topic disappear.
//
// Consuming: kafkajs has no public group-less consumer (consumer() requires a
// groupId and the group protocol). Instead the script reads the partitions back
// with kafkajs's own cluster/broker layer (broker.fetch, a plain Fetch request
// decoded by kafkajs), reached through the Kafka instance's private
// createCluster hook. That still checks kafkajs can parse the broker's Fetch
// responses and record batches (including gzip), without a consumer group.
'use strict'

const { Kafka, CompressionTypes, Partitioners, logLevel } = require('kafkajs')

const TOTAL = 500
const KEYS = 23
const PARTITIONS = 2
const TIMEOUT_MS = 60000

function fail(msg) {
  console.error(`kafkajs_smoke: FAIL: ${msg}`)
  process.exit(1)
}

function step(msg) {
  console.log(`kafkajs_smoke: ${msg}`)
}

function expected(i) {
  const key = `key-${i % KEYS}`
  const value = `value-${String(i).padStart(5, '0')}`
  const headers = i % 4 === 0 ? { idx: String(i), kind: 'smoke' } : {}
  return { key, value, headers }
}

function toMessage(i) {
  const { key, value, headers } = expected(i)
  const m = { key, value }
  if (Object.keys(headers).length > 0) m.headers = headers
  return m
}

function range(from, to) {
  return Array.from({ length: to - from }, (_, j) => from + j)
}

async function withTimeout(promise, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

// Group-less read of one partition from offset 0 up to `high`, via kafkajs's
// broker-level Fetch.
async function readPartition(cluster, topic, partition, high) {
  const leaders = cluster.findLeaderForPartitions(topic, [partition])
  const nodeIds = Object.keys(leaders)
  if (nodeIds.length !== 1) fail(`no leader for ${topic}/${partition}: ${JSON.stringify(leaders)}`)
  const broker = await cluster.findBroker({ nodeId: nodeIds[0] })
  const out = []
  let offset = 0
  const deadline = Date.now() + TIMEOUT_MS
  while (offset < high) {
    if (Date.now() > deadline) fail(`reading ${topic}/${partition}: stuck at offset ${offset} of ${high}`)
    const response = await broker.fetch({
      maxWaitTime: 500,
      minBytes: 1,
      maxBytes: 1 << 20,
      isolationLevel: 1,
      topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
    })
    if (response.errorCode) fail(`fetch ${topic}/${partition}: top-level error ${response.errorCode}`)
    const t = response.responses.find(r => r.topicName === topic)
    if (!t) fail(`fetch ${topic}/${partition}: topic missing from response ${JSON.stringify(response)}`)
    const p = t.partitions.find(x => x.partition === partition)
    if (!p) fail(`fetch ${topic}/${partition}: partition missing from response`)
    if (p.errorCode) fail(`fetch ${topic}/${partition} at ${offset}: error code ${p.errorCode}`)
    if (Number(p.highWatermark) !== high) {
      fail(`fetch ${topic}/${partition}: high watermark ${p.highWatermark}, expected ${high}`)
    }
    for (const m of p.messages) {
      const o = Number(m.offset)
      if (o < offset) continue // a batch may start before the requested offset
      out.push({ partition, offset: o, key: m.key, value: m.value, headers: m.headers || {} })
      offset = o + 1
    }
  }
  return out
}

async function main() {
  if (process.argv.length !== 4) fail('usage: kafkajs_smoke.js ADDR TOPIC')
  const [addr, topic] = process.argv.slice(2)

  const kafka = new Kafka({
    clientId: 'kafkajs-smoke',
    brokers: [addr],
    logLevel: logLevel.WARN,
    retry: { retries: 3 },
    requestTimeout: 30000,
  })

  // --- admin: create + metadata ----------------------------------------
  const admin = kafka.admin()
  await admin.connect()
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 30000,
  })
  if (created !== true) fail(`createTopics returned ${created} (topic already existed?)`)
  step(`created topic ${topic}`)

  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  const tmd = md.topics.find(t => t.name === topic)
  if (!tmd) fail(`fetchTopicMetadata has no ${topic}: ${JSON.stringify(md)}`)
  const partIds = tmd.partitions.map(p => p.partitionId).sort((a, b) => a - b)
  if (JSON.stringify(partIds) !== JSON.stringify(range(0, PARTITIONS))) {
    fail(`fetchTopicMetadata shows partitions ${JSON.stringify(partIds)}, expected 0..${PARTITIONS - 1}`)
  }
  for (const p of tmd.partitions) {
    if (p.partitionErrorCode) fail(`partition ${p.partitionId} has error ${p.partitionErrorCode}`)
    if (p.leader === undefined || p.leader < 0) fail(`partition ${p.partitionId} has no leader`)
  }
  step(`metadata: partitions ${JSON.stringify(partIds)}`)

  // --- produce -----------------------------------------------------------
  // [0,300): three plain batches of 100; [300,400): one GZIP batch;
  // [400,500): idempotent producer. All acks -1.
  const sentAt = new Map() // partition -> list of base offsets seen
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const batches = [
    { idxs: range(0, 100) },
    { idxs: range(100, 200) },
    { idxs: range(200, 300) },
    { idxs: range(300, 400), compression: CompressionTypes.GZIP },
  ]
  const note = meta => {
    for (const r of meta) {
      if (r.errorCode) fail(`produce to ${r.topicName}/${r.partition}: error ${r.errorCode}`)
      if (!sentAt.has(r.partition)) sentAt.set(r.partition, [])
      sentAt.get(r.partition).push(Number(r.baseOffset))
    }
  }
  for (const b of batches) {
    const meta = await withTimeout(
      producer.send({ topic, acks: -1, compression: b.compression, messages: b.idxs.map(toMessage) }),
      'producer.send'
    )
    note(meta)
  }
  await producer.disconnect()
  step('plain producer sent 400 messages (one GZIP batch)')

  const idem = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1,
    // kafkajs warns unless retries are unbounded; withTimeout() bounds the send.
    retry: { retries: Number.MAX_SAFE_INTEGER, maxRetryTime: 2000 },
  })
  await idem.connect()
  note(
    await withTimeout(
      idem.send({ topic, acks: -1, messages: range(400, 500).map(toMessage) }),
      'idempotent producer.send'
    )
  )
  await idem.disconnect()
  step('idempotent producer sent 100 messages')

  // --- offsets -------------------------------------------------------------
  const offsets = await admin.fetchTopicOffsets(topic)
  const highs = new Map(offsets.map(o => [o.partition, Number(o.high)]))
  const sum = [...highs.values()].reduce((a, b) => a + b, 0)
  if (offsets.length !== PARTITIONS || sum !== TOTAL) {
    fail(`fetchTopicOffsets ${JSON.stringify(offsets)}: high watermarks sum to ${sum}, expected ${TOTAL}`)
  }
  for (const o of offsets) {
    if (Number(o.low) !== 0) fail(`partition ${o.partition}: low watermark ${o.low}, expected 0`)
  }
  step(`offsets: ${JSON.stringify(offsets)}`)

  // --- read back (group-less; see header comment) -------------------------
  const symbol = Object.getOwnPropertySymbols(kafka).find(
    s => s.toString() === 'Symbol(private:Kafka:createCluster)'
  )
  if (!symbol) fail('kafkajs internals changed: no createCluster hook (update the read-back code)')
  const cluster = kafka[symbol]({ allowAutoTopicCreation: false })
  await cluster.connect()
  await cluster.addTargetTopic(topic)
  const records = []
  for (let p = 0; p < PARTITIONS; p++) {
    const recs = await readPartition(cluster, topic, p, highs.get(p))
    // Offsets contiguous from 0.
    recs.forEach((r, j) => {
      if (r.offset !== j) fail(`partition ${p}: record ${j} has offset ${r.offset}`)
    })
    records.push(...recs)
  }
  await cluster.disconnect()

  const seen = new Map()
  const keyPartition = new Map()
  let withHeaders = 0
  for (const r of records) {
    const value = r.value ? r.value.toString() : null
    const m = /^value-(\d{5})$/.exec(value || '')
    if (!m) fail(`unexpected value ${JSON.stringify(value)} at ${r.partition}/${r.offset}`)
    const i = Number(m[1])
    if (seen.has(i)) fail(`message ${i} read twice`)
    seen.set(i, r)
    const exp = expected(i)
    const key = r.key ? r.key.toString() : null
    if (key !== exp.key) fail(`message ${i}: key ${JSON.stringify(key)}, expected ${exp.key}`)
    if (!keyPartition.has(key)) keyPartition.set(key, r.partition)
    if (keyPartition.get(key) !== r.partition) {
      fail(`key ${key} found in partitions ${keyPartition.get(key)} and ${r.partition}`)
    }
    const got = {}
    for (const [k, v] of Object.entries(r.headers)) got[k] = Buffer.isBuffer(v) ? v.toString() : String(v)
    if (JSON.stringify(got) !== JSON.stringify(exp.headers)) {
      fail(`message ${i}: headers ${JSON.stringify(got)}, expected ${JSON.stringify(exp.headers)}`)
    }
    if (Object.keys(exp.headers).length) withHeaders++
  }
  if (seen.size !== TOTAL) {
    const missing = range(0, TOTAL).filter(i => !seen.has(i))
    fail(`read back ${seen.size} distinct messages, expected ${TOTAL}; missing e.g. ${missing.slice(0, 10)}`)
  }
  // Per-key order preserved within its partition.
  const lastByKey = new Map()
  for (const r of records) {
    const i = Number(r.value.toString().slice(6))
    const k = r.key.toString()
    if (lastByKey.has(k) && lastByKey.get(k) > i) fail(`key ${k}: message ${i} after ${lastByKey.get(k)}`)
    lastByKey.set(k, i)
  }
  // Produce acks' base offsets must be offsets we read back.
  for (const [p, bases] of sentAt) {
    for (const b of bases) {
      if (!(b >= 0 && b < highs.get(p))) fail(`partition ${p}: produce acked base offset ${b} outside [0, ${highs.get(p)})`)
    }
  }
  step(`read back ${records.length} messages via broker.fetch`)

  // --- delete ----------------------------------------------------------------
  await admin.deleteTopics({ topics: [topic], timeout: 30000 })
  const deadline = Date.now() + 10000
  let names = await admin.listTopics()
  while (names.includes(topic) && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 200))
    names = await admin.listTopics()
  }
  if (names.includes(topic)) fail(`topic ${topic} still listed after deleteTopics: ${JSON.stringify(names)}`)
  await admin.disconnect()

  const counts = {}
  for (const [p, h] of highs) counts[p] = h
  console.log(
    `kafkajs_smoke OK: kafkajs ${require('kafkajs/package.json').version}, topic ${topic}, ` +
      `${TOTAL} messages (300 plain, 100 gzip, 100 idempotent) read back exactly once, ` +
      `per-partition counts ${JSON.stringify(counts)}, ${keyPartition.size} keys stable, ` +
      `${withHeaders} with headers, topic deleted`
  )
}

main().then(
  () => process.exit(0),
  e => fail(`${e && e.stack ? e.stack : e}${e && e.type ? ` (type ${e.type})` : ''}`)
)
