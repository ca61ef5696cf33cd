#!/usr/bin/env python3
"""Generate pkg/api/src/proto/schema.txt: the protobuf field table of the built-in Kubernetes
types (message -> field number -> JSON name and type), so the API server can decode the
protobuf bodies that kubectl >= 1.32 sends.

Sources (both crates are in the cargo registry once `cargo fetch` ran):
  * k8s-pb (prost declarations): message names, field numbers, wire types, message references;
  * k8s-openapi (serde impls): the JSON name of each field (`serialize_field(.., "json", &self.rust)`).
Usage: tools/gen_proto_schema.py [> pkg/api/src/proto/schema.txt]
"""
import glob, os, re, sys

home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
def find(crate):
    hits = sorted(glob.glob(f"{home}/registry/src/*/{crate}"))
    if not hits:
        sys.exit(f"{crate} not found in the cargo registry: run `cargo fetch` with k8s-pb in Cargo.lock")
    return hits[-1]
PB = find("k8s-pb-0.9.0")
OA = find("k8s-openapi-0.29.0") + "/src/v1_33"

# JSON names from k8s-openapi: (module, Type, rust_field) -> json
json_names = {}
for f in glob.glob(OA + "/**/*.rs", recursive=True):
    mod = os.path.relpath(os.path.dirname(f), OA)
    text = open(f).read()
    for m in re.finditer(r"impl crate::serde::Serialize for (\w+) \{(.*?)\n\}\n", text, re.S):
        ty, body = m.group(1), m.group(2)
        for fm in re.finditer(r'serialize_field\(&mut state, "([^"]+)", &?(?:value|self\.(\w+))', body):
            if fm.group(2):
                json_names[(mod, ty, fm.group(2))] = fm.group(1)
        for fm in re.finditer(r'if let Some\(value\) = &self\.(\w+) \{\s*crate::serde::ser::SerializeStruct::serialize_field\(&mut state, "([^"]+)"', body):
            json_names[(mod, ty, fm.group(1))] = fm.group(2)

known_types = {(k[0], k[1]) for k in json_names}
# per type: folded JSON name -> JSON name, for names whose Rust spelling differs (type_, uID)
folded = {}
for (m_, t_, _r), j in json_names.items():
    folded.setdefault((m_, t_), {})[j.lower()] = j

def camel(snake):
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])

def resolve(mod, path):
    """A Rust type path relative to module `mod` -> (module, Type)."""
    path = path.strip()
    segs = path.split("::")
    base = mod.split("/")
    while segs and segs[0] == "super":
        base = base[:-1]
        segs = segs[1:]
    if len(segs) == 1:
        return "/".join(base), segs[0]
    return "/".join(base + segs[:-1]), segs[-1]

def inner(ty):
    ty = ty.replace(" ", "").replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper):-1]
    return ty.rstrip(",")

out = []
unmatched = 0
for f in sorted(glob.glob(PB + "/src/**/mod.rs", recursive=True)):
    mod = os.path.relpath(os.path.dirname(f), PB + "/src")
    text = open(f).read()
    for m in re.finditer(r"pub struct (\w+) \{\}|pub struct (\w+) \{(.*?)\n\}", text, re.S):
        name, body = (m.group(1), "") if m.group(1) else (m.group(2), m.group(3))
        fields = []
        lines = body.split("\n")
        for i, line in enumerate(lines):
            pm = re.search(r'#\[prost\((.*?)tag = "(\d+)"\)\]', line)
            if not pm:
                continue
            spec, tag = pm.group(1), pm.group(2)
            decl = ""
            for j, nxt in enumerate(lines[i + 1:]):
                if "pub " in nxt:
                    # rustfmt may wrap long types over several lines
                    decl = nxt.strip()
                    k = i + 1 + j
                    while not (decl.endswith(",") and decl.count("<") == decl.count(">")) and k + 1 < len(lines):
                        k += 1
                        decl += " " + lines[k].strip()
                    break
            dm = re.match(r"pub (r#)?(\w+):\s*(.*),$", decl)
            if not dm:
                continue
            rust, ty = dm.group(2), dm.group(3)
            json = json_names.get((mod, name, rust)) or json_names.get((mod, name, rust + "_"))
            known_type = (mod, name) in known_types
            if json is None and known_type:
                json = folded[(mod, name)].get(rust.replace("_", "").lower())
            embedded = known_type and json is None
            if json is None:
                json = camel(rust)
                unmatched += 1
                if known_type and os.environ.get("SHOW_UNMATCHED"):
                    sys.stderr.write(f"unmatched {mod}/{name}.{rust} -> {json}\n")
            repeated = "repeated" in spec
            kind = spec.split(",")[0].strip()
            if not kind.startswith("btree_map"):
                kind = kind.split("=")[0].strip()
            if kind.startswith("btree_map"):
                km = re.search(r'btree_map = "(\w+), (\w+)"', spec)
                k, v = km.group(1), km.group(2)
                if v == "message":
                    flat = ty.replace(" ", "")
                    vm = re.search(r"BTreeMap<[^,]+,(.*?),?>$", flat)
                    if not vm:
                        sys.exit(f"cannot parse map type of {mod}/{name}.{rust}: {ty!r}")
                    vmod, vty = resolve(mod, inner(vm.group(1)))
                    v = f"{vmod}/{vty}"
                fields.append(f"{tag} {json} map {k} {v}")
            elif kind == "message":
                tmod, tty = resolve(mod, inner(ty))
                if embedded and not repeated:
                    # Go embeds this struct: its fields appear inline in the JSON object.
                    fields.append(f"{tag} - inline {tmod}/{tty}")
                else:
                    fields.append(f"{tag} {json} {'rep ' if repeated else ''}msg {tmod}/{tty}")
            else:
                fields.append(f"{tag} {json} {'rep ' if repeated else ''}{kind}")
        out.append(f"{mod}/{name}")
        out.extend("  " + x for x in fields)

sys.stdout.write("# generated by tools/gen_proto_schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33); do not edit\n")
sys.stdout.write("\n".join(out) + "\n")
sys.stderr.write(f"{len([l for l in out if not l.startswith(' ')])} messages, {len([l for l in out if l.startswith(' ')])} fields, {unmatched} JSON names derived (no k8s-openapi match)\n")
