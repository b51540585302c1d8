#!/usr/bin/env node
// A minimal @grpc/grpc-js-xds client for the meshlib control-plane interop test.
//
//   GRPC_XDS_BOOTSTRAP_CONFIG='{...}' node client.js --target xds:///svc.test.svc.cluster.local:50051 \
//       --method /test.Echo/Call --count 5 --count 5 --metadata x-canary=true [--hold]
//
// Each `--count N` starts a batch of N unary calls; the `--metadata k=v` flags that follow it
// apply to that batch (given before any --count they make a single batch of --count 1).
// Requests and responses are raw bytes (identity (de)serialisers), so no .proto is needed.
//
// Output, on stdout, one JSON object per line:
//   {"event":"ready","ms":...}                           the channel became READY (or {"event":"not_ready",...})
//   {"event":"call","batch":0,"call":0,"ok":true,"reply":"v1","ms":...}
//   {"event":"call","batch":0,"call":1,"ok":false,"code":14,"details":"...","ms":...}
//   {"event":"done","calls":10,"failures":0}
// With --hold the process then keeps its channel (and so its ADS stream) open until stdin
// gets a line or is closed, so the caller can read the control plane's status first.
// Exit code: 0 if every call succeeded, 1 if some failed, 2 on bad usage.
'use strict';

const grpc = require('@grpc/grpc-js');
const grpcJsXds = require('@grpc/grpc-js-xds');

function usage(message) {
  process.stderr.write(`client.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { target: '', method: '/test.Echo/Call', payload: 'ping', deadlineMs: 10000, hold: false, batches: [] };
  let current = null;
  const value = (i, flag) => {
    if (i + 1 >= argv.length) usage(`${flag} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case '--target': opts.target = value(i, flag); i++; break;
      case '--method': opts.method = value(i, flag); i++; break;
      case '--payload': opts.payload = value(i, flag); i++; break;
      case '--deadline-ms': opts.deadlineMs = Number(value(i, flag)); i++; break;
      case '--hold': opts.hold = true; break;
      case '--count': {
        const n = Number(value(i, flag)); i++;
        if (!Number.isInteger(n) || n < 0) usage(`--count must be a non-negative integer, got ${argv[i]}`);
        current = { count: n, metadata: [] };
        opts.batches.push(current);
        break;
      }
      case '--metadata': {
        const kv = value(i, flag); i++;
        const eq = kv.indexOf('=');
        if (eq <= 0) usage(`--metadata must be key=value, got ${kv}`);
        if (current === null) {
          current = { count: 1, metadata: [] };
          opts.batches.push(current);
        }
        current.metadata.push([kv.slice(0, eq).toLowerCase(), kv.slice(eq + 1)]);
        break;
      }
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!opts.target) usage('--target is required');
  if (!Number.isFinite(opts.deadlineMs) || opts.deadlineMs <= 0) usage('--deadline-ms must be positive');
  if (opts.batches.length === 0) opts.batches.push({ count: 1, metadata: [] });
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function unary(client, opts, metadata) {
  const md = new grpc.Metadata();
  for (const [k, v] of metadata) md.add(k, v);
  const started = Date.now();
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      opts.method,
      (buf) => buf, // identity serialiser: the request is already a Buffer
      (buf) => buf, // identity deserialiser: hand back the raw response bytes
      Buffer.from(opts.payload),
      md,
      { deadline: Date.now() + opts.deadlineMs },
      (err, reply) => {
        const ms = Date.now() - started;
        if (err) resolve({ ok: false, code: err.code, details: err.details, ms });
        else resolve({ ok: true, reply: reply.toString('utf8'), ms });
      },
    );
  });
}

function waitForReady(client, deadlineMs) {
  return new Promise((resolve) => client.waitForReady(Date.now() + deadlineMs, (err) => resolve(err || null)));
}

function waitForStdin() {
  return new Promise((resolve) => {
    process.stdin.once('data', resolve);
    process.stdin.once('end', resolve);
    process.stdin.once('error', resolve);
    process.stdin.resume();
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  grpcJsXds.register();
  const client = new grpc.Client(opts.target, grpc.credentials.createInsecure());
  const started = Date.now();
  const notReady = await waitForReady(client, opts.deadlineMs);
  if (notReady) emit({ event: 'not_ready', error: String(notReady.message || notReady), ms: Date.now() - started });
  else emit({ event: 'ready', ms: Date.now() - started });

  let calls = 0;
  let failures = 0;
  for (let b = 0; b < opts.batches.length; b++) {
    const batch = opts.batches[b];
    for (let c = 0; c < batch.count; c++) {
      const result = await unary(client, opts, batch.metadata);
      emit({ event: 'call', batch: b, call: c, metadata: Object.fromEntries(batch.metadata), ...result });
      calls++;
      if (!result.ok) failures++;
    }
  }
  emit({ event: 'done', calls, failures });
  if (opts.hold) await waitForStdin();
  client.close();
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`client.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
