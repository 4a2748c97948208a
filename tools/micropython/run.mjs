// Run a script under real MicroPython (the WebAssembly port from npm) in Node.js.
//
//   node tools/micropython/run.mjs [--heap BYTES] [--put HOST_PATH=MP_PATH ...] SCRIPT.py
//
// Each --put copies a host file into MicroPython's virtual file system (folders are created); /lib is on
// sys.path. The script's output goes to stdout; a Python exception prints its traceback to stderr and exits 1.
// Exit 2 means the command line or a file was wrong.
//
// This port collects garbage only between top-level calls: gc.collect() inside a running script merely marks a
// collection as due, because the WebAssembly stack cannot be scanned for roots. So a script may be split into
// chunks by lines "# @top-level" (optionally "# @top-level repeat=N"); each chunk runs as its own top-level call
// (N times for repeat=N) sharing one set of globals, and a collection asked for in one chunk happens before the
// next. A loop whose iterations are chunks therefore frees its garbage every iteration, as on a board.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, "node_modules", "@micropython", "micropython-webassembly-pyscript", "micropython.mjs");

function usage(message) {
  process.stderr.write(`run.mjs: ${message}\nusage: node run.mjs [--heap BYTES] [--put HOST=MP ...] SCRIPT.py\n`);
  process.exit(2);
}

const puts = [];
let heap = 4 * 1024 * 1024;
let script = null;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--put") {
    const spec = argv[++i] || "";
    const eq = spec.indexOf("=");
    if (eq < 1) usage(`--put needs HOST=MP, got '${spec}'`);
    puts.push([spec.slice(0, eq), spec.slice(eq + 1)]);
  } else if (argv[i] === "--heap") {
    heap = Number(argv[++i]);
    if (!Number.isInteger(heap) || heap < 65536) usage("--heap needs a byte count >= 65536");
  } else if (script === null) {
    script = argv[i];
  } else {
    usage(`unexpected argument '${argv[i]}'`);
  }
}
if (script === null) usage("no script given");

let loadMicroPython;
try {
  ({ loadMicroPython } = await import(pkg));
} catch (err) {
  usage(`cannot load ${pkg} (${err.message}); run 'npm install' in tools/micropython`);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function mkdirs(path) {
  let current = "";
  for (const part of path.split("/").filter(Boolean)) {
    current += "/" + part;
    try {
      mp.FS.mkdir(current);
    } catch (err) {
      // EEXIST: already there
    }
  }
}

mkdirs("/lib");
mkdirs("/tmp");
for (const [host, target] of puts) {
  let data;
  try {
    data = readFileSync(host);
  } catch (err) {
    usage(`cannot read ${host}: ${err.message}`);
  }
  mkdirs(dirname(target));
  mp.FS.writeFile(target, data);
}

let code;
try {
  code = readFileSync(script, "utf8");
} catch (err) {
  usage(`cannot read ${script}: ${err.message}`);
}

const chunks = [];
let current = { repeat: 1, lines: [] };
for (const line of code.split("\n")) {
  const marker = line.match(/^# @top-level(?:\s+repeat=(\d+))?\s*$/);
  if (marker) {
    chunks.push(current);
    current = { repeat: marker[1] ? Number(marker[1]) : 1, lines: [] };
  } else {
    current.lines.push(line);
  }
}
chunks.push(current);

try {
  mp.runPython("import sys\nif '/lib' not in sys.path:\n    sys.path.append('/lib')\n");
  for (const chunk of chunks) {
    const text = chunk.lines.join("\n");
    for (let i = 0; i < chunk.repeat; i++) mp.runPython(text);
  }
} catch (err) {
  process.stderr.write((err && err.message ? err.message : String(err)) + "\n");
  process.exit(1);
}
process.exit(0);
