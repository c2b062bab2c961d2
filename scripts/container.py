"""Build Shelver's image with whichever container engine is present (docker or podman).

Used by `make image` through the CLI below and by the container tests through `Engine`,
`ensure_base_image` and `build_image`. Standard library only, like scripts/emulator.py.

    python scripts/container.py build --tag shelver:latest     # base image if needed, then build
    python scripts/container.py base                           # only the base image

Where no image registry can be reached (this machine: no docker.io), the Dockerfile's base
`debian:bookworm-slim` is made locally the way Debian's official image is made: a debootstrap
minbase of bookworm, slimmed like debuerreotype's `--slim` variant (no docs, man pages or locales;
apt caches and lists emptied), imported under the official name. A registry that answers wins.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
DEFAULT_TAG = "shelver:latest"
SUITE = "bookworm"
# podman on this kind of machine needs: no default ulimits (setrlimit RLIMIT_NOFILE fails),
# runc (crun: "cgroups in hybrid mode not supported") and the host's network namespace.
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
# What debuerreotype's slim variant keeps out of the image, and the apt settings it bakes in.
_SLIM_DPKG_FILTER = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_APT_CONF = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class ContainerError(RuntimeError):
    """No usable engine, or a build step failed."""


@dataclass(frozen=True)
class Engine:
    """A container engine CLI: `docker` with a daemon behind it, or `podman`."""

    name: str

    @classmethod
    def detect(cls) -> Engine:
        for name in ("docker", "podman"):
            if shutil.which(name) and _succeeds([name, "info"]):
                return cls(name)
        raise ContainerError("no container engine answers: install podman (Debian: "
                             "apt-get install podman runc) or start a Docker daemon")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "podman":
            env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
        return env

    def run(self, *args: str, check: bool = True, capture: bool = False,
            timeout: float | None = None, stdin: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([self.name, *args], env=self.env(), input=stdin,
                                stdout=subprocess.PIPE if capture else None,
                                stderr=subprocess.PIPE if capture else None,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            detail = result.stderr.decode(errors="replace")[-2000:] if capture else ""
            raise ContainerError(f"{self.name} {' '.join(args)} failed with exit code "
                                 f"{result.returncode}{': ' + detail if detail else ''}")
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False, capture=True).returncode == 0

    def image_size(self, image: str) -> int:
        """Uncompressed size in bytes, as `images` lists it."""
        out = self.run("image", "inspect", "--format", "{{.Size}}", image, capture=True)
        return int(out.stdout.decode().strip())


# What the tests install where no engine is present (Debian's packages).
ENGINE_PACKAGES = ("podman", "runc", "debootstrap")


def install_engine() -> None:
    """apt-get install podman, runc and debootstrap unless all are there (needs root)."""
    if all(shutil.which(tool) for tool in ENGINE_PACKAGES):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", *ENGINE_PACKAGES]):
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise ContainerError(f"{' '.join(command)} failed:\n"
                                 f"{result.stdout.decode(errors='replace')[-2000:]}")


def _succeeds(cmd: Sequence[str]) -> bool:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30, check=False, env=Engine(cmd[0]).env()).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def host_mirror() -> str:
    """The Debian mirror this machine's apt uses (reachable where the registry is not)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    with contextlib.suppress(OSError):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].strip()
    return DEFAULT_MIRROR


def ensure_base_image(engine: Engine, image: str = BASE_IMAGE) -> str:
    """Have `image` locally: already there, pulled, or made with debootstrap. Says which."""
    if engine.image_exists(image):
        return "present"
    if engine.run("pull", "--quiet", image, check=False, capture=True,
                  timeout=300).returncode == 0:
        return "pulled"
    make_base_image(engine, image)
    return "made with debootstrap"


def make_base_image(engine: Engine, image: str = BASE_IMAGE, mirror: str | None = None) -> None:
    """debootstrap a minbase bookworm, slim it like the official image, import it as `image`."""
    if not shutil.which("debootstrap"):
        raise ContainerError("debootstrap is missing (Debian: apt-get install debootstrap)")
    mirror = mirror or host_mirror()
    with tempfile.TemporaryDirectory(prefix="shelver-base-") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
                       check=True, stdout=subprocess.DEVNULL)
        _slim(root, mirror)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                               stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            imported = subprocess.run(
                [engine.name, "import", "--change", 'CMD ["bash"]', "-", image],
                stdin=tar.stdout, env=engine.env(), stdout=subprocess.DEVNULL, check=False)
        finally:
            tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ContainerError(f"importing {root} as {image} failed")


def _slim(root: Path, mirror: str) -> None:
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(_SLIM_DPKG_FILTER)
    for name, text in _APT_CONF.items():
        (root / "etc/apt/apt.conf.d" / name).write_text(text)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # debootstrap copies the build host's; engines mount their own at run time.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (root / name).write_text("")
    security = mirror.replace("/debian", "/debian-security")
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        _SOURCES.format(mirror=mirror, security=security, suite=SUITE))
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*",
                    "usr/share/info/*", "usr/share/man/*", "usr/share/groff/*",
                    "usr/share/lintian/*", "usr/share/linda/*", "usr/share/locale/*"):
        for path in root.glob(pattern):
            _remove(path)
    for doc in (root / "usr/share/doc").glob("*"):
        for path in doc.rglob("*") if doc.is_dir() else [doc]:
            if path.is_file() and path.name != "copyright":
                path.unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def build_image(engine: Engine, tag: str = DEFAULT_TAG, context: Path = REPO) -> None:
    """Build the repository's Dockerfile as `tag` (the base image must be there: see above)."""
    args = ["build", "--tag", tag]
    if engine.name == "podman":
        # OCI images have no HEALTHCHECK; the docker format keeps it. Host network: the build's
        # apt and pip reach the mirrors as this machine does.
        args += ["--format", "docker", "--network", "host"]
    ca_bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca_bundle and Path(ca_bundle).is_file():
        # A machine whose TLS goes through its own CA (a proxy) hands it to pip in the build as
        # a build secret: never stored in a layer, and ignored where none is given.
        args += ["--secret", f"id=ca,src={ca_bundle}"]
    engine.run(*args, str(context))


def _cmd_base(args: argparse.Namespace) -> int:
    engine = Engine.detect()
    print(f"{BASE_IMAGE}: {ensure_base_image(engine)} ({engine.name})", file=sys.stderr)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    engine = Engine.detect()
    started = time.monotonic()
    how = ensure_base_image(engine)
    print(f"{BASE_IMAGE}: {how}", file=sys.stderr)
    build_image(engine, args.tag)
    size = engine.image_size(args.tag)
    print(f"built {args.tag} with {engine.name} in {time.monotonic() - started:.0f} s: "
          f"{size / 1e6:.1f} MB ({size / 2**20:.1f} MiB) uncompressed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base", help="make sure the base image is present").set_defaults(
        func=_cmd_base)
    build = sub.add_parser("build", help="build the Dockerfile and print the image size")
    build.add_argument("--tag", default=DEFAULT_TAG)
    build.set_defaults(func=_cmd_build)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (ContainerError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
