#!/usr/bin/env python3
"""Cross-file checks of compose.yaml, prometheus.yml and Grafana provisioning.

    python3 scripts/check_compose.py [compose.yaml] [--prometheus prometheus.yml]

(from the repository root; scripts/check-ops.sh runs it). The files are parsed
with PyYAML (anchors and merge keys resolved as compose does). What one file
says about another is checked; the compose schema itself is left to
`docker compose config -q`, run too when the docker compose plugin is there.

  * the stack's services exist; local paths exist (build context, Dockerfile,
    bind-mount sources); host ports are published once;
  * services built from the Dockerfile run a binary the image of their build
    target (default: the last stage) holds;
  * every gateway-N passes `--instance gateway-N` (the `gateway` label of its
    series): no two replicas share one;
  * every prometheus.yml target is a compose service listening on that port,
    and the prometheus service mounts its config and each rule file;
  * Grafana provisioning: a Prometheus datasource (any uid: the dashboard
    queries its `datasource` variable) pointing at a compose service, and
    dashboard providers reading a mounted directory that holds dashboard JSON;
  * host ports: compose's `${VAR:-default}` is resolved (from the environment,
    else the default) before the ports are compared.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ops_yaml import load, yaml  # noqa: E402

EXPECTED_SERVICES = ["redis", "origin-sim", "gateway-1", "gateway-2", "gateway-3", "prometheus", "grafana", "load"]


def interpolate(text: str) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR-default}`: the
    variable's value from the environment, else the default."""
    def value(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2) or "", m.group(3) or ""
        env = os.environ.get(name)
        if env is None or (op == ":-" and env == ""):
            return default
        return env
    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", value, text)


def stage_binaries(dockerfile: str, target: str | None) -> set[str]:
    """The binaries the image built for `target` (None: the last stage) holds:
    `install ... -t DIR target/release/NAME...` puts them in DIR, and a stage has
    what it (or the stage it is FROM) copies `--from=` a DIR holding them. A
    Dockerfile that installs them some other way: every target/release name."""
    every = set(re.findall(r"target/release/([\w-]+)", dockerfile))
    dirs: dict[str, set[str]] = {}
    for m in re.finditer(r"install\b[^\n]*?-t\s+(\S+)((?:\s+target/release/[\w-]+)+)", dockerfile):
        dirs[m.group(1).rstrip("/")] = set(re.findall(r"target/release/([\w-]+)", m.group(2)))
    stages: dict[str, set[str]] = {}
    last = None
    for block in re.split(r"(?m)^(?=FROM\s)", dockerfile):
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", block, re.I)
        if not m:
            continue
        have = set(stages.get(m.group(1), set()))
        for src in re.findall(r"COPY\s+--from=\S+\s+(\S+)", block):
            have |= dirs.get(src.rstrip("/"), set())
        last = m.group(2) or f"#{len(stages)}"
        stages[last] = have
    if not dirs or last is None:
        return every
    return stages.get(target or last, set())


def _words(svc: dict) -> list[str]:
    """entrypoint + command of a service, as argv words."""
    out = []
    for key in ("entrypoint", "command"):
        v = svc.get(key)
        out += [str(x) for x in v] if isinstance(v, list) else shlex.split(v or "")
    return out


def _mounts(svc: dict) -> dict:
    """container path -> host path of a service's short-syntax bind mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes") or [] if isinstance(v, str) and ":" in v}


def check_compose(path: str, prom_path: str) -> list[str]:
    errors: list[str] = []
    base = os.path.dirname(os.path.abspath(path))

    def local(p: str) -> str:
        return os.path.normpath(os.path.join(base, p))

    services = load(path).get("services") or {}
    errors += [f"{path}: missing service {n!r}" for n in EXPECTED_SERVICES if n not in services]

    host_ports: dict[str, str] = {}
    instances: dict[str, str] = {}
    for name, svc in services.items():
        where = f"{path}: service {name}"
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = os.path.join(local(ctx), "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                errors.append(f"{where}: {dockerfile} not found")
            else:
                with open(dockerfile, encoding="utf-8") as f:
                    target = None if isinstance(build, str) else build.get("target")
                    binaries = stage_binaries(f.read(), target)
                words = _words(svc)
                if not words or words[0] not in binaries:
                    stage = f"stage {target!r} of the Dockerfile" if target else "the Dockerfile's default stage"
                    errors.append(f"{where}: runs {words[:1]}, not one of the binaries of {stage} {sorted(binaries)}")
        for host in _mounts(svc).values():
            if host.startswith((".", "/")) and not os.path.exists(local(host)):
                errors.append(f"{where}: bind-mount source {host!r} does not exist")
        for p in svc.get("ports") or []:
            parts = interpolate(str(p)).split("/")[0].split(":")
            hp = parts[-2] if len(parts) > 1 else None
            if hp in host_ports:
                errors.append(f"{where}: host port {hp} already published by {host_ports[hp]}")
            elif hp:
                host_ports[hp] = name
        if name.startswith("gateway-"):
            words = _words(svc)
            inst = words[words.index("--instance") + 1] if "--instance" in words[:-1] else None
            if inst != name:
                errors.append(f"{where}: must pass --instance {name} (its `gateway` label), not {inst!r}")
            elif inst in instances:
                errors.append(f"{where}: --instance {inst!r} also used by {instances[inst]}")
            instances[inst] = name

    errors += _check_prometheus(prom_path, services, path)
    errors += _check_grafana(services, path, local)
    return errors


def _check_prometheus(prom_path: str, services: dict, compose_path: str) -> list[str]:
    errors = []
    prom = load(prom_path) or {}
    for job in prom.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                if host in ("localhost", "127.0.0.1"):
                    continue
                if host not in services:
                    errors.append(f"{prom_path}: job {job.get('job_name')}: target {target} is not a service of {compose_path}")
                    continue
                svc = services[host]
                text = " ".join(_words(svc) + [interpolate(str(p)) for p in svc.get("ports") or []])
                if not re.search(rf"(^|[\s:]){re.escape(port)}(\s|$|/)", text):
                    errors.append(f"{prom_path}: target {target}: service {host} does not listen on port {port}")
    mounts = _mounts(services.get("prometheus") or {})
    config = next((c for c, h in mounts.items() if os.path.basename(h) == os.path.basename(prom_path)), None)
    if config is None:
        return errors + [f"{compose_path}: the prometheus service does not mount {prom_path}"]
    for rf in prom.get("rule_files") or []:
        want = os.path.normpath(os.path.join(os.path.dirname(config), rf))
        if want not in mounts:
            errors.append(f"{compose_path}: prometheus loads rule file {want} but nothing is mounted there")
    return errors


def _provisioned(directory: str, key: str) -> list[dict]:
    out = []
    for fn in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if fn.endswith((".yml", ".yaml")):
            out += (load(os.path.join(directory, fn)) or {}).get(key) or []
    return out


def _check_grafana(services: dict, compose_path: str, local) -> list[str]:
    errors = []
    mounts = _mounts(services.get("grafana") or {})
    prov = mounts.get("/etc/grafana/provisioning")
    if prov is None:
        return [f"{compose_path}: grafana does not mount a provisioning directory at /etc/grafana/provisioning"]
    ds_dir = os.path.join(local(prov), "datasources")
    ds = next((d for d in _provisioned(ds_dir, "datasources") if d.get("type") == "prometheus"), None)
    if ds is None:
        errors.append(f"{ds_dir}: no prometheus datasource (the dashboard's `datasource` variable needs one)")
    else:
        m = re.match(r"https?://([^:/]+)", str(ds.get("url", "")))
        if not m or m.group(1) not in services:
            errors.append(f"{ds_dir}: prometheus datasource url {ds.get('url')!r} is not a compose service")
    db_dir = os.path.join(local(prov), "dashboards")
    providers = _provisioned(db_dir, "providers")
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


def main(argv: list[str]) -> int:
    args = list(argv)
    prom = "prometheus.yml"
    if "--prometheus" in args:
        i = args.index("--prometheus")
        prom = args[i + 1]
        del args[i : i + 2]
    path = args[0] if args else "compose.yaml"
    try:
        errors = check_compose(path, prom)
    except (OSError, yaml.YAMLError, AttributeError, IndexError, ValueError) as e:  # a file missing or of the wrong shape
        errors = [f"{type(e).__name__}: {e}"]
    for e in errors:
        print(f"check_compose: {e}", file=sys.stderr)
    if errors:
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
    print(f"check_compose: {path}, {prom}, grafana provisioning: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
