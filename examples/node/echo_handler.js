#!/usr/bin/env node
// An ExProto echo handler in Node.js: every chunk a device sends comes back.
// @grpc/grpc-js and @grpc/proto-loader load proto/exproto.proto at run time.
//
//   (cd examples/node && npm install)
//   node examples/node/echo_handler.js --listen 127.0.0.1:9001 --adapter 127.0.0.1:9100
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 ? process.argv[i + 1] : def;
}
const listen = arg("listen", "127.0.0.1:9001");
const adapterAddr = arg("adapter", "127.0.0.1:9100");
const token = arg("token", "");

const def = protoLoader.loadSync(path.join(__dirname, "..", "..", "proto", "exproto.proto"),
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const v1 = grpc.loadPackageDefinition(def).emqx.exproto.v1;

const adapter = new v1.ConnectionAdapter(adapterAddr, grpc.credentials.createInsecure());
function meta() {
  const m = new grpc.Metadata();
  if (token) m.set("authorization", "Bearer " + token);
  return m;
}
function send(conn, bytes) {
  return new Promise((resolve) => adapter.Send({ conn, bytes }, meta(), (err, resp) => resolve(!err && resp.code === "SUCCESS")));
}

const handler = {
  OnSocketCreated(call, cb) {
    const p = call.request.conninfo.peername;
    console.log(`${call.request.conn}: connected from ${p.host}:${p.port}`);
    cb(null, {});
  },
  async OnReceivedBytes(call, cb) {
    await send(call.request.conn, call.request.bytes); // the device sees its bytes back
    cb(null, {});
  },
  OnTimerTimeout(call, cb) { cb(null, {}); },
  async OnReceivedMessages(call, cb) {
    for (const m of call.request.messages) await send(call.request.conn, m.payload); // every message
    cb(null, {});
  },
  OnSocketClosed(call, cb) {
    console.log(`${call.request.conn}: closed ${call.request.reason}`);
    cb(null, {});
  },
};

const server = new grpc.Server();
server.addService(v1.ConnectionUnaryHandler.service, handler);
server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`node echo handler on ${listen}, calling exgate at ${adapterAddr}`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
