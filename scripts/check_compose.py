#!/usr/bin/env python3
"""Static checks of compose.yaml (and its cross-references), standard library only.

Usage (from the repository root; scripts/check-ops.sh runs it):

    python3 scripts/check_compose.py [compose.yaml] [--prometheus prometheus.yml]

CI has no PyYAML, so this file carries a small parser for the YAML *subset* the
ops files are written in (`parse_yaml_subset`, also used by check_dashboard.py
for alerts.yml):

  * block mappings and block sequences, indentation by spaces only;
  * plain, 'single' and "double" quoted scalars, block scalars (| |- > >-),
    flow sequences of scalars ([a, "b"]) and the empty flow mapping {};
  * comments (`#` at the start of a line or after a space, outside quotes).

Anything else (anchors &, aliases *, merge keys <<, tags !, flow mappings,
multi-line plain or quoted scalars, several documents) is rejected with the
line number, rather than silently mis-read. That is why compose.yaml repeats
the three gateway services instead of sharing an anchor. Scalars stay strings.

What is checked in compose.yaml:
  * the expected services exist, each has `image` or `build`;
  * every local path exists: build context and dockerfile, bind-mount sources
    (`./x:/y[:ro]` or long syntax), env_file;
  * named volumes are declared at top level;
  * host ports are unique across all services (profiles included);
  * depends_on names real services; `condition: service_healthy` targets
    have a healthcheck; healthcheck `test` starts with CMD / CMD-SHELL / NONE;
  * ${VAR} interpolations are well formed;
  * services built from the Dockerfile run one of the binaries it installs;
  * every gateway-N runs `--instance gateway-N` (the Prometheus `gateway`
    label), the instance names are unique;
  * every static target of prometheus.yml is a compose service and the port is
    one that service listens on (appears in its command or ports), and the
    prometheus service mounts each rule file next to its config;
  * Grafana provisioning (the host dir mounted at /etc/grafana/provisioning):
    a datasource with uid `prometheus` whose url is a compose service, and
    dashboard providers reading a mounted directory that holds dashboard JSON.
If the `docker compose` plugin is installed, `docker compose config -q` runs
too (the real parser); without it the check is skipped with a note.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

# --------------------------------------------------------------------------
# YAML subset parser


class YamlSubsetError(ValueError):
    pass


_UNSUPPORTED_START = re.compile(r"^(&|\*|!|<<\s*:|\?\s|%)")


def _strip_comment(s: str) -> str:
    """Remove a trailing comment outside quotes; `#` must follow whitespace."""
    out = []
    quote = None
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            out.append(c)
            if quote == "'" and c == "'":
                if i + 1 < len(s) and s[i + 1] == "'":
                    out.append("'")
                    i += 1
                else:
                    quote = None
            elif quote == '"' and c == "\\" and i + 1 < len(s):
                out.append(s[i + 1])
                i += 1
            elif quote == '"' and c == '"':
                quote = None
        else:
            if c == "#" and (i == 0 or s[i - 1] in " \t"):
                break
            if c in "'\"" and (not out or "".join(out).strip() == "" or out[-1] in " [,:-"):
                quote = c
            out.append(c)
        i += 1
    return "".join(out).rstrip()


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "/": "/", "0": "\0", " ": " "}


def _unescape_double(body: str, lineno: int) -> str:
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                raise YamlSubsetError(f"line {lineno}: dangling backslash in double-quoted scalar")
            n = body[i + 1]
            if n in _ESCAPES:
                out.append(_ESCAPES[n])
                i += 2
                continue
            if n == "x" and i + 3 < len(body):
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            if n == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise YamlSubsetError(f"line {lineno}: unsupported escape \\{n}")
        out.append(c)
        i += 1
    return "".join(out)


def _split_flow(body: str, lineno: int) -> list[str]:
    items, cur, quote = [], [], None
    i = 0
    while i < len(body):
        c = body[i]
        if quote:
            cur.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(body):
                cur.append(body[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == ",":
            items.append("".join(cur).strip())
            cur = []
        elif c in "[]{}":
            raise YamlSubsetError(f"line {lineno}: nested flow collections are outside the subset")
        else:
            cur.append(c)
        i += 1
    if quote:
        raise YamlSubsetError(f"line {lineno}: unterminated quote in flow sequence")
    last = "".join(cur).strip()
    if last:
        items.append(last)
    return items


def _scalar(text: str, lineno: int):
    t = text.strip()
    if t == "" or t == "~" or t == "null":
        return None
    if _UNSUPPORTED_START.match(t):
        raise YamlSubsetError(f"line {lineno}: anchors, aliases, tags and merge keys are outside the subset: {t!r}")
    if t[0] == '"':
        if len(t) < 2 or t[-1] != '"' or t.endswith('\\"') and not t.endswith('\\\\"'):
            raise YamlSubsetError(f"line {lineno}: double-quoted scalar must end on the same line")
        return _unescape_double(t[1:-1], lineno)
    if t[0] == "'":
        if len(t) < 2 or t[-1] != "'":
            raise YamlSubsetError(f"line {lineno}: single-quoted scalar must end on the same line")
        return t[1:-1].replace("''", "'")
    if t[0] == "[":
        if t[-1] != "]":
            raise YamlSubsetError(f"line {lineno}: flow sequence must end on the same line")
        return [_scalar(x, lineno) for x in _split_flow(t[1:-1], lineno)]
    if t[0] == "{":
        if t == "{}":
            return {}
        raise YamlSubsetError(f"line {lineno}: flow mappings are outside the subset")
    return t


_KEY = re.compile(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"#\-\[\]{},&*!|>%@`][^#]*?|-[^\s][^#]*?):(?:\s+|$)""")


def _split_key(content: str, lineno: int):
    m = _KEY.match(content)
    if not m:
        return None
    raw = m.group(1)
    key = _scalar(raw, lineno)
    if not isinstance(key, str):
        raise YamlSubsetError(f"line {lineno}: mapping keys must be scalars")
    return key, content[m.end() :]


class _Lines:
    def __init__(self, text: str):
        if "\t" in text.replace("\t#", ""):
            for n, line in enumerate(text.splitlines(), 1):
                if "\t" in line[: len(line) - len(line.lstrip())]:
                    raise YamlSubsetError(f"line {n}: tab indentation")
        self.raw = text.splitlines()
        # (lineno, indent, content) of significant lines; content comment-stripped
        self.rows = []
        for n, line in enumerate(self.raw, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped in ("---", "..."):
                if self.rows:
                    raise YamlSubsetError(f"line {n}: only one YAML document is supported")
                continue
            content = _strip_comment(line.lstrip(" "))
            self.rows.append([n, len(line) - len(line.lstrip(" ")), content])
        self.i = 0

    def peek(self):
        return self.rows[self.i] if self.i < len(self.rows) else None


def _block_scalar(lines: _Lines, style: str, parent_indent: int, lineno: int) -> str:
    # collect raw lines after `lineno` that are blank or indented deeper than parent
    body = []
    n = lineno  # raw index of the next line (lineno is 1-based)
    while n < len(lines.raw):
        line = lines.raw[n]
        if line.strip() and len(line) - len(line.lstrip(" ")) <= parent_indent:
            break
        body.append(line)
        n += 1
    while body and not body[-1].strip():
        body.pop()
    # skip the significant rows we consumed
    while lines.peek() and lines.peek()[0] <= n:
        lines.i += 1
    if not body:
        return ""
    ind = min(len(x) - len(x.lstrip(" ")) for x in body if x.strip())
    text_lines = [x[ind:] if x.strip() else "" for x in body]
    if style.startswith(">"):
        out, para = [], []
        for tl in text_lines:
            if tl == "":
                out.append(" ".join(para))
                para = []
            else:
                para.append(tl.strip())
        out.append(" ".join(para))
        text = "\n".join(x for x in out)
    else:
        text = "\n".join(text_lines)
    if not style.endswith("-"):
        text += "\n"
    return text


def _parse_value(lines: _Lines, rest: str, indent: int, lineno: int, allow_compact_seq: bool):
    rest = rest.strip()
    if rest in ("|", "|-", ">", ">-", "|+", ">+"):
        return _block_scalar(lines, rest.replace("+", ""), indent, lineno)
    if rest:
        return _scalar(rest, lineno)
    nxt = lines.peek()
    if nxt is None:
        return None
    if nxt[1] > indent:
        return _parse_node(lines, nxt[1])
    if allow_compact_seq and nxt[1] == indent and (nxt[2] == "-" or nxt[2].startswith("- ")):
        return _parse_seq(lines, indent)
    return None


def _parse_node(lines: _Lines, indent: int):
    row = lines.peek()
    if row[2] == "-" or row[2].startswith("- "):
        return _parse_seq(lines, indent)
    return _parse_map(lines, indent)


def _parse_map(lines: _Lines, indent: int) -> dict:
    out: dict = {}
    while True:
        row = lines.peek()
        if row is None or row[1] < indent:
            return out
        lineno, ind, content = row
        if ind > indent:
            raise YamlSubsetError(f"line {lineno}: unexpected indentation")
        if content == "-" or content.startswith("- "):
            return out  # a compact sequence belongs to the caller
        kv = _split_key(content, lineno)
        if kv is None:
            raise YamlSubsetError(f"line {lineno}: expected `key: value`, got {content!r} (multi-line scalars are outside the subset)")
        key, rest = kv
        if key in out:
            raise YamlSubsetError(f"line {lineno}: duplicate key {key!r}")
        lines.i += 1
        out[key] = _parse_value(lines, rest, indent, lineno, allow_compact_seq=True)


def _parse_seq(lines: _Lines, indent: int) -> list:
    out: list = []
    while True:
        row = lines.peek()
        if row is None or row[1] < indent:
            return out
        lineno, ind, content = row
        if ind > indent:
            raise YamlSubsetError(f"line {lineno}: unexpected indentation")
        if not (content == "-" or content.startswith("- ")):
            return out
        item = content[1:].lstrip(" ")
        if item == "":
            lines.i += 1
            nxt = lines.peek()
            out.append(_parse_node(lines, nxt[1]) if nxt and nxt[1] > indent else None)
            continue
        sub_indent = ind + (len(content) - len(item))
        if _split_key(item, lineno) is not None:
            # "- key: value" starts a mapping at the item's column
            row[1], row[2] = sub_indent, item
            out.append(_parse_map(lines, sub_indent))
            continue
        if item.startswith("- "):
            raise YamlSubsetError(f"line {lineno}: nested compact sequences are outside the subset")
        lines.i += 1
        out.append(_parse_value(lines, item, ind, lineno, allow_compact_seq=False))


def parse_yaml_subset(text: str):
    lines = _Lines(text)
    if lines.peek() is None:
        return None
    first = lines.peek()
    node = _parse_node(lines, first[1])
    rest = lines.peek()
    if rest is not None:
        raise YamlSubsetError(f"line {rest[0]}: unexpected content (indentation?) {rest[2]!r}")
    return node


def load_yaml_subset(path: str):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse_yaml_subset(text)
    except YamlSubsetError as e:
        raise YamlSubsetError(f"{path}: {e}") from None


# --------------------------------------------------------------------------
# compose checks

EXPECTED_SERVICES = ["redis", "origin-sim", "gateway-1", "gateway-2", "gateway-3", "prometheus", "grafana", "load"]
DOCKERFILE_BINARIES = {"gateway", "origin-sim", "stampede-bench"}
_INTERP = re.compile(r"\$(\$|\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")


def _as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _walk_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for x in node:
            yield from _walk_strings(x)
    elif isinstance(node, dict):
        for k, x in node.items():
            yield k
            yield from _walk_strings(x)


def _command_words(cmd) -> list[str]:
    if cmd is None:
        return []
    if isinstance(cmd, list):
        return [str(x) for x in cmd]
    return shlex.split(cmd)


def _host_port(spec: str):
    """'[ip:]host:container[/proto]' -> (host port, container port) or (None, container)."""
    spec = spec.split("/")[0]
    if spec.startswith("["):  # [::1]:8080:8080
        spec = spec[spec.index("]") + 2 :]
    parts = spec.split(":")
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def check_compose(path: str, prometheus_path: str | None) -> list[str]:
    errors: list[str] = []
    base = os.path.dirname(os.path.abspath(path))

    def local(p: str) -> str:
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    doc = load_yaml_subset(path)
    if not isinstance(doc, dict):
        return [f"{path}: top level must be a mapping"]
    for key in doc:
        if key not in ("services", "volumes", "networks", "configs", "secrets", "name") and not key.startswith("x-"):
            errors.append(f"{path}: unknown top-level key {key!r}")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        return errors + [f"{path}: services must be a mapping"]
    declared_volumes = set((doc.get("volumes") or {}).keys())

    for name in EXPECTED_SERVICES:
        if name not in services:
            errors.append(f"{path}: missing service {name!r}")

    for s in _walk_strings(doc):
        for m in re.finditer(r"\$", s):
            if not _INTERP.match(s, m.start()) and not (m.start() > 0 and s[m.start() - 1] == "$"):
                errors.append(f"{path}: malformed interpolation in {s!r}")
                break

    host_ports: dict[str, str] = {}
    instances: dict[str, str] = {}
    for name, svc in services.items():
        where = f"{path}: service {name}"
        if not isinstance(svc, dict):
            errors.append(f"{where}: must be a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            errors.append(f"{where}: needs `image` or `build`")
        build = svc.get("build")
        built_here = False
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isdir(local(ctx)):
                errors.append(f"{where}: build context {ctx!r} does not exist")
            elif not os.path.isfile(os.path.join(local(ctx), dockerfile)):
                errors.append(f"{where}: dockerfile {dockerfile!r} not found in {ctx!r}")
            else:
                built_here = True
        for ef in _as_list(svc.get("env_file")):
            p = ef.get("path") if isinstance(ef, dict) else ef
            required = not (isinstance(ef, dict) and str(ef.get("required", "true")).lower() == "false")
            if required and not os.path.exists(local(p)):
                errors.append(f"{where}: env_file {p!r} does not exist")
        for vol in _as_list(svc.get("volumes")):
            if isinstance(vol, dict):
                src, vtype = vol.get("source"), vol.get("type", "volume")
            else:
                src = vol.split(":")[0]
                vtype = "bind" if src.startswith((".", "/", "~")) else "volume"
            if vtype == "bind":
                if not src or not os.path.exists(local(os.path.expanduser(src))):
                    errors.append(f"{where}: bind-mount source {src!r} does not exist")
            elif vtype == "volume" and src and src not in declared_volumes:
                errors.append(f"{where}: named volume {src!r} is not declared under top-level volumes")
        for p in _as_list(svc.get("ports")):
            hp, _ = _host_port(str(p))
            if hp is None:
                continue
            if hp in host_ports:
                errors.append(f"{where}: host port {hp} already published by {host_ports[hp]}")
            host_ports[hp] = name
        deps = svc.get("depends_on") or {}
        for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, None) for d in deps)):
            if dep not in services:
                errors.append(f"{where}: depends_on unknown service {dep!r}")
            elif isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                if not isinstance(services[dep], dict) or "healthcheck" not in services[dep]:
                    errors.append(f"{where}: waits for {dep} to be healthy but {dep} has no healthcheck")
        hc = svc.get("healthcheck")
        if hc is not None:
            test = hc.get("test") if isinstance(hc, dict) else None
            if isinstance(test, list):
                if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                    errors.append(f"{where}: healthcheck test list must start with CMD, CMD-SHELL or NONE")
            elif not isinstance(test, str):
                errors.append(f"{where}: healthcheck needs a `test`")
        words = _command_words(svc.get("command"))
        if built_here and "entrypoint" not in svc:
            if not words or words[0] not in DOCKERFILE_BINARIES:
                errors.append(f"{where}: command must start with one of {sorted(DOCKERFILE_BINARIES)}")
        if name.startswith("gateway-"):
            if "--instance" not in words or words.index("--instance") + 1 >= len(words):
                errors.append(f"{where}: gateway without --instance (its metrics need gateway=\"{name}\")")
            else:
                inst = words[words.index("--instance") + 1]
                if inst != name:
                    errors.append(f"{where}: --instance {inst!r} should equal the service name")
                if inst in instances:
                    errors.append(f"{where}: --instance {inst!r} also used by {instances[inst]}")
                instances[inst] = name

    if prometheus_path:
        errors += _check_prometheus_refs(prometheus_path, services, path)
    errors += _check_grafana_refs(services, path, local)
    return errors


def _container_to_host(svc: dict) -> dict:
    out = {}
    for vol in _as_list(svc.get("volumes")):
        if isinstance(vol, str) and vol.count(":") >= 1:
            parts = vol.split(":")
            out[parts[1]] = parts[0]
    return out


def _check_grafana_refs(services: dict, compose_path: str, local) -> list[str]:
    """Provisioning files under the host dir mounted at /etc/grafana/provisioning:
    datasource uid `prometheus` pointing at the prometheus service, dashboard
    providers whose path is a mounted host dir holding at least one .json."""
    errors = []
    gsvc = services.get("grafana")
    if not isinstance(gsvc, dict):
        return errors
    mounts = _container_to_host(gsvc)
    prov = mounts.get("/etc/grafana/provisioning")
    if prov is None:
        return [f"{compose_path}: grafana does not mount a provisioning directory at /etc/grafana/provisioning"]
    ds_dir = os.path.join(local(prov), "datasources")
    uids = {}
    for fn in sorted(os.listdir(ds_dir)) if os.path.isdir(ds_dir) else []:
        if fn.endswith((".yml", ".yaml")):
            doc = load_yaml_subset(os.path.join(ds_dir, fn)) or {}
            for ds in doc.get("datasources") or []:
                uids[ds.get("uid")] = ds
    ds = uids.get("prometheus")
    if ds is None:
        errors.append(f"{ds_dir}: no datasource with uid `prometheus` (the dashboard refers to it)")
    else:
        m = re.match(r"https?://([^:/]+)(?::(\d+))?", str(ds.get("url", "")))
        if not m or m.group(1) not in services:
            errors.append(f"{ds_dir}: prometheus datasource url {ds.get('url')!r} is not a compose service")
    db_dir = os.path.join(local(prov), "dashboards")
    providers = []
    for fn in sorted(os.listdir(db_dir)) if os.path.isdir(db_dir) else []:
        if fn.endswith((".yml", ".yaml")):
            doc = load_yaml_subset(os.path.join(db_dir, fn)) or {}
            providers += doc.get("providers") or []
    if not providers:
        errors.append(f"{db_dir}: no dashboard provider")
    for pr in providers:
        cpath = ((pr.get("options") or {}).get("path") or "").rstrip("/")
        host = mounts.get(cpath)
        if host is None:
            errors.append(f"{db_dir}: provider {pr.get('name')!r} reads {cpath!r}, which compose does not mount into grafana")
        elif not any(f.endswith(".json") for f in os.listdir(local(host))):
            errors.append(f"{db_dir}: provider {pr.get('name')!r}: {host} holds no dashboard JSON")
    return errors


def _check_prometheus_refs(prom_path: str, services: dict, compose_path: str) -> list[str]:
    errors = []
    prom = load_yaml_subset(prom_path)
    for job in (prom or {}).get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                if host in ("localhost", "127.0.0.1"):
                    continue
                svc = services.get(host)
                if not isinstance(svc, dict):
                    errors.append(f"{prom_path}: job {job.get('job_name')}: target {target} is not a service of {compose_path}")
                    continue
                text = " ".join(_command_words(svc.get("command"))) + " " + " ".join(str(p) for p in _as_list(svc.get("ports")))
                if not re.search(rf"(^|[\s:]){re.escape(port)}(\s|$|/)", text):
                    errors.append(f"{prom_path}: target {target}: service {host} does not listen on port {port} (not in its command or ports)")
    psvc = services.get("prometheus")
    if isinstance(psvc, dict):
        mounts = _container_to_host(psvc)
        config_in_container = next((c for c, h in mounts.items() if os.path.basename(h) == os.path.basename(prom_path)), None)
        if config_in_container is None:
            errors.append(f"{compose_path}: prometheus service does not mount {prom_path}")
        else:
            cdir = os.path.dirname(config_in_container)
            for rf in (prom or {}).get("rule_files") or []:
                want = os.path.normpath(os.path.join(cdir, rf))
                if want not in mounts:
                    errors.append(f"{compose_path}: prometheus loads rule file {want} but nothing is mounted there")
    return errors


def main(argv: list[str]) -> int:
    args = list(argv)
    prom = "prometheus.yml"
    if "--prometheus" in args:
        i = args.index("--prometheus")
        prom = args[i + 1]
        del args[i : i + 2]
    path = args[0] if args else "compose.yaml"
    try:
        errors = check_compose(path, prom if os.path.exists(prom) else None)
        if not os.path.exists(prom):
            errors.append(f"{prom} not found")
    except YamlSubsetError as e:
        errors = [str(e)]
    if errors:
        for e in errors:
            print(f"check_compose: {e}", file=sys.stderr)
        return 1
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        env = dict(os.environ)
        env.setdefault("STAMPEDE_ADMIN_TOKEN", "check-only")
        r = subprocess.run([docker, "compose", "-f", path, "config", "-q"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"check_compose: docker compose config failed:\n{r.stderr}", file=sys.stderr)
            return 1
        print("check_compose: docker compose config -q: ok")
    else:
        print("check_compose: note: docker compose plugin not installed, skipped `docker compose config -q`")
    print(f"check_compose: {path}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
