// The one command the TypeScript client's generated parts come from: the data plane's protos
// copied from ../../protos (warden.proto, types.proto), and TypeScript types for them and for
// google.rpc's Status and error details (proto/google/rpc, vendored from googleapis) made by
// proto-loader-gen-types into src/generated. With --check, nothing is written and the run fails
// when the committed files differ from what it would write.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const here = path.resolve(__dirname, "..");
const protos = path.resolve(here, "..", "..", "protos", "warden", "v1");
const check = process.argv.includes("--check");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "warden-node-gen-"));

fs.mkdirSync(path.join(work, "proto", "warden", "v1"), { recursive: true });
for (const name of ["warden.proto", "types.proto"]) {
  fs.copyFileSync(path.join(protos, name), path.join(work, "proto", "warden", "v1", name));
}
fs.cpSync(path.join(here, "proto", "google"), path.join(work, "proto", "google"), { recursive: true });
execFileSync(path.join(here, "node_modules", ".bin", "proto-loader-gen-types"), [
  "--grpcLib=@grpc/grpc-js", "--longs=Number", "--enums=String", "--defaults", "--oneofs",
  "-I", "proto", "-O", path.join("src", "generated"),
  "warden/v1/warden.proto", "google/rpc/status.proto", "google/rpc/error_details.proto",
], { stdio: "inherit", cwd: work });  // relative paths: the files name none of this machine

function files(root) {
  const out = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else out.push(path.relative(root, full));
    }
  };
  if (fs.existsSync(root)) walk(root);
  return out.sort();
}

let stale = [];
for (const part of [path.join("proto", "warden"), path.join("src", "generated")]) {
  const made = files(path.join(work, part));
  const kept = files(path.join(here, part));
  if (check) {
    for (const f of new Set([...made, ...kept])) {
      const a = path.join(work, part, f);
      const b = path.join(here, part, f);
      if (!fs.existsSync(a) || !fs.existsSync(b) || !fs.readFileSync(a).equals(fs.readFileSync(b))) {
        stale.push(path.join(part, f));
      }
    }
  } else {
    fs.rmSync(path.join(here, part), { recursive: true, force: true });
    fs.cpSync(path.join(work, part), path.join(here, part), { recursive: true });
  }
}
fs.rmSync(work, { recursive: true, force: true });
if (stale.length) {
  console.error(`generated files are out of date: ${stale.join(", ")}; run npm run generate`);
  process.exit(1);
}
console.log(check ? "generated files up to date" : "wrote proto/warden and src/generated");
