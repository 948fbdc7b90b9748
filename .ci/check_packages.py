#!/usr/bin/env python3
"""Checks the crates.io metadata of every publishable crate and what its package holds.

Run after `cargo package --workspace --no-verify` (which builds target/package/*.crate).
For each workspace member that may be published: a description, a license, a README that
exists and is packaged, LICENSE-MIT and LICENSE-APACHE packaged, 1-5 keywords that
crates.io accepts, and 1-5 categories from crates.io's list.

The category slugs are those of crates.io's src/boot/categories.toml (rust-lang/crates.io,
2026); keyword rules from crates.io's publishing docs: at most 5, each at most 20
characters, starting with a letter or digit, then letters, digits, `_`, `-` or `+`.
"""

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

CATEGORIES = {
    "algorithms", "api-bindings", "asynchronous", "authentication", "caching",
    "command-line-interface", "command-line-utilities", "compression", "computer-vision",
    "config", "concurrency", "cryptography", "cryptography::cryptocurrencies", "database",
    "database-implementations", "data-structures", "date-and-time", "development-tools",
    "development-tools::build-utils", "development-tools::cargo-plugins",
    "development-tools::debugging", "development-tools::ffi",
    "development-tools::procedural-macro-helpers", "development-tools::profiling",
    "development-tools::testing", "email", "embedded", "emulators", "encoding",
    "external-ffi-bindings", "filesystem", "game-engines", "game-development", "games",
    "graphics", "gui", "hardware-support", "internationalization", "localization",
    "mathematics", "memory-management", "multimedia", "multimedia::audio",
    "multimedia::video", "multimedia::images", "multimedia::encoding",
    "network-programming", "no-std", "os", "os::linux-apis", "os::macos-apis",
    "os::unix-apis", "os::windows-apis", "parser-implementations", "parsing", "rendering",
    "rendering::engine", "rendering::graphics-api", "rendering::data-formats",
    "rust-patterns", "science", "science::robotics", "simulation", "template-engine",
    "text-editors", "text-processing", "value-formatting", "visualization", "wasm",
    "web-programming", "web-programming::http-client", "web-programming::http-server",
    "web-programming::websocket",
}
KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,19}$")


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    target = Path(meta["target_directory"]) / "package"
    problems = []
    checked = 0
    for p in meta["packages"]:
        if p["publish"] == []:  # publish = false
            continue
        checked += 1
        name = p["name"]
        say = lambda what: problems.append(f"{name}: {what}")  # noqa: E731
        if not p.get("description"):
            say("no description")
        if not p.get("license") and not p.get("license_file"):
            say("no license")
        kws = p.get("keywords") or []
        if not 1 <= len(kws) <= 5:
            say(f"{len(kws)} keywords (give 1 to 5)")
        for k in kws:
            if not KEYWORD.match(k):
                say(f"keyword {k!r} is not accepted by crates.io")
        cats = p.get("categories") or []
        if not 1 <= len(cats) <= 5:
            say(f"{len(cats)} categories (give 1 to 5)")
        for c in cats:
            if c not in CATEGORIES:
                say(f"category {c!r} is not a crates.io category slug")
        readme = p.get("readme")
        if not readme:
            say("no readme in Cargo.toml")
        elif not (Path(p["manifest_path"]).parent / readme).is_file():
            say(f"readme {readme} does not exist")
        crate = target / f"{name}-{p['version']}.crate"
        if not crate.is_file():
            say(f"{crate} missing: run `cargo package --workspace --no-verify` first")
            continue
        with tarfile.open(crate) as t:
            files = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
        for f in ["LICENSE-MIT", "LICENSE-APACHE"] + ([readme] if readme else []):
            if f not in files:
                say(f"{f} is not in the package")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"{checked} publishable crates: metadata and packaged files in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
