#!/usr/bin/env python3
"""Offline `cargo audit`-style check of a Cargo.lock against a RustSec advisory-db
snapshot held as a bare git repository (no work tree needed).

Usage:
    audit_lock.py --db /work/.mirror/rustsec+advisory-db/repo --lock Cargo.lock [--json out.json]

Semantics follow the `rustsec` crate: a locked version is affected by an
advisory when it matches none of the `[versions] patched` requirements and
none of the `[versions] unaffected` requirements; withdrawn advisories are
skipped.  Version requirements use Cargo/semver-crate rules (implemented
below, no third-party packages).
"""
import argparse
import json
import re
import subprocess
import sys
import tomllib

# --------------------------------------------------------------------------
# semver
# --------------------------------------------------------------------------
_VER_RE = re.compile(
    r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")


class Version:
    __slots__ = ("major", "minor", "patch", "pre")

    def __init__(self, text):
        m = _VER_RE.match(text.strip())
        if not m:
            raise ValueError(f"bad version {text!r}")
        self.major, self.minor, self.patch = (int(m.group(i)) for i in (1, 2, 3))
        self.pre = tuple(m.group(4).split(".")) if m.group(4) else ()

    def triple(self):
        return (self.major, self.minor, self.patch)

    def __repr__(self):
        s = "%d.%d.%d" % self.triple()
        return s + ("-" + ".".join(self.pre) if self.pre else "")


def _pre_key(pre):
    # A release (empty pre) sorts after any prerelease of the same triple.
    if not pre:
        return (1,)
    parts = []
    for ident in pre:
        if ident.isdigit():
            parts.append((0, int(ident), ""))
        else:
            parts.append((1, 0, ident))
    return (0, tuple(parts))


def vkey(v):
    return (v.triple(), _pre_key(v.pre))


_CMP_RE = re.compile(
    r"^(=|>=|<=|>|<|~|\^)?\s*"
    r"(\d+|[*xX])(?:\.(\d+|[*xX]))?(?:\.(\d+|[*xX]))?"
    r"(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class Comparator:
    """One comparator, e.g. '>= 1.2.3', '^0.4', '< 2', '~1.2', '1.*'."""

    def __init__(self, text):
        text = text.strip()
        m = _CMP_RE.match(text)
        if not m:
            raise ValueError(f"bad comparator {text!r}")
        op, maj, mnr, pat, pre = m.groups()
        wild = lambda s: s is None or s in ("*", "x", "X")
        if wild(maj):
            self.op, self.major, self.minor, self.patch = "*", None, None, None
            self.pre = ()
            return
        self.op = op or "^"
        self.major = int(maj)
        self.minor = None if wild(mnr) else int(mnr)
        self.patch = None if (self.minor is None or wild(pat)) else int(pat)
        self.pre = tuple(pre.split(".")) if pre else ()
        if (mnr is not None and wild(mnr)) or (pat is not None and wild(pat)):
            # "1.*" / "1.2.x" behave like "=1" / "=1.2" (wildcard)
            if self.op in ("^", "="):
                self.op = "="

    def _lo(self):
        return Version("%d.%d.%d" % (self.major, self.minor or 0, self.patch or 0)
                       + ("-" + ".".join(self.pre) if self.pre else ""))

    def matches(self, v):
        op = self.op
        if op == "*":
            return True
        M, m, p = self.major, self.minor, self.patch
        if op == "=":
            if v.major != M or (m is not None and v.minor != m):
                return False
            if p is not None and v.patch != p:
                return False
            return p is None or v.pre == self.pre
        if op in (">", ">=", "<", "<="):
            return self._cmp_op(v)
        if op == "~":
            if v.major != M:
                return False
            if m is not None and v.minor != m:
                return False
            return m is None or p is None or vkey(v) >= vkey(self._lo())
        if op == "^":
            if v.major != M:
                return False
            if m is None:
                return True
            if p is None:
                if M > 0:
                    return v.minor >= m
                return v.minor == m
            if M > 0:
                return (v.minor, v.patch) >= (m, p) and vkey(v) >= vkey(self._lo())
            if m > 0:
                return v.minor == m and vkey(v) >= vkey(self._lo())
            return v.minor == m and v.patch == p and vkey(v) >= vkey(self._lo())
        raise AssertionError(op)

    def _cmp_op(self, v):
        M, m, p = self.major, self.minor, self.patch
        op = self.op
        # Compare against the partial version the way the semver crate does.
        if op == ">":
            if v.major != M:
                return v.major > M
            if m is None:
                return False
            if v.minor != m:
                return v.minor > m
            if p is None:
                return False
            return vkey(v) > vkey(self._lo())
        if op == ">=":
            if v.major != M:
                return v.major > M
            if m is None:
                return True
            if v.minor != m:
                return v.minor > m
            if p is None:
                return True
            return vkey(v) >= vkey(self._lo())
        if op == "<":
            if v.major != M:
                return v.major < M
            if m is None:
                return False
            if v.minor != m:
                return v.minor < m
            if p is None:
                return False
            return vkey(v) < vkey(self._lo())
        if op == "<=":
            if v.major != M:
                return v.major < M
            if m is None:
                return True
            if v.minor != m:
                return v.minor < m
            if p is None:
                return True
            return vkey(v) <= vkey(self._lo())
        raise AssertionError(op)

    def allows_pre_of(self, v):
        return (bool(self.pre) and self.major == v.major and self.minor == v.minor
                and self.patch == v.patch)


class VersionReq:
    """Comma-joined comparators; all must match (semver crate rules)."""

    def __init__(self, text):
        self.text = text
        self.cmps = [Comparator(c) for c in text.split(",") if c.strip()]

    def matches(self, v):
        if not all(c.matches(v) for c in self.cmps):
            return False
        if v.pre:
            # A prerelease only matches a requirement that names a prerelease
            # of the same major.minor.patch.
            return any(c.allows_pre_of(v) for c in self.cmps)
        return True

    def __repr__(self):
        return self.text


def _selftest():
    cases = [
        (">= 1.2.3", "1.2.3", True), (">= 1.2.3", "1.2.2", False),
        ("^0.4", "0.4.9", True), ("^0.4", "0.5.0", False), ("^0.4", "0.3.9", False),
        ("< 2", "1.99.0", True), ("< 2", "2.0.0", False),
        (">= 0.3.1, < 0.4.0", "0.3.5", True), (">= 0.3.1, < 0.4.0", "0.4.0", False),
        ("^1.2.3", "1.9.0", True), ("^1.2.3", "1.2.2", False), ("^1.2.3", "2.0.0", False),
        ("^0.2.3", "0.2.9", True), ("^0.2.3", "0.3.0", False),
        ("^0.0.3", "0.0.3", True), ("^0.0.3", "0.0.4", False),
        ("~1.2.3", "1.2.9", True), ("~1.2.3", "1.3.0", False),
        ("~1.2", "1.2.0", True), ("~1", "1.9.9", True), ("~1", "2.0.0", False),
        ("> 1.2", "1.2.9", False), ("> 1.2", "1.3.0", True),
        ("<= 1.2", "1.2.9", True), ("<= 1.2", "1.3.0", False),
        ("=1.2.3", "1.2.3", True), ("=1.2", "1.2.7", True), ("=1.2", "1.3.0", False),
        ("*", "9.9.9", True), ("1.*", "1.5.0", True), ("1.*", "2.0.0", False),
        ("0.3.0", "0.3.5", True), (">= 1.0.0", "1.0.0-alpha.1", False),
        (">= 1.0.0-alpha.2", "1.0.0-alpha.10", True),
        (">= 1.0.0-alpha.2", "1.0.0-alpha.1", False),
        (">= 1.0.0-alpha.2", "1.0.0", True), ("< 0.0.0", "0.1.0", False),
    ]
    bad = [(r, v, e) for r, v, e in cases if VersionReq(r).matches(Version(v)) != e]
    if bad:
        raise SystemExit(f"semver self-test failed: {bad}")


# --------------------------------------------------------------------------
# advisory db (bare git repo)
# --------------------------------------------------------------------------
def git(db, *args, input=None):
    return subprocess.run(["git", "--git-dir", db, *args], input=input,
                          capture_output=True, check=True).stdout


def load_advisories(db, rev="HEAD"):
    listing = git(db, "ls-tree", "-r", rev, "crates").decode().splitlines()
    entries = []
    for line in listing:
        meta, path = line.split("\t", 1)
        if re.search(r"/RUSTSEC-\d{4}-\d{4}\.md$", path):
            entries.append((meta.split()[2], path))
    # Read all blobs in one `git cat-file --batch` call.
    out = git(db, "cat-file", "--batch",
              input="".join(sha + "\n" for sha, _ in entries).encode())
    advisories, pos = [], 0
    for sha, path in entries:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        body = out[nl + 1: nl + 1 + size].decode()
        pos = nl + 1 + size + 1
        m = re.search(r"```toml\s*\n(.*?)\n```", body, re.S)
        if not m:
            raise SystemExit(f"no toml front matter in {path}")
        front = tomllib.loads(m.group(1))
        rest = body[m.end():]
        t = re.search(r"^#\s+(.+)$", rest, re.M)
        adv = front["advisory"]
        vers = front.get("versions", {})
        advisories.append({
            "path": path,
            "id": adv["id"],
            "package": adv["package"],
            "date": str(adv.get("date", "")),
            "informational": adv.get("informational"),
            "withdrawn": adv.get("withdrawn"),
            "aliases": adv.get("aliases", []),
            "url": adv.get("url"),
            "title": t.group(1).strip() if t else "",
            "patched": vers.get("patched", []),
            "unaffected": vers.get("unaffected", []),
            "affected": front.get("affected", {}),
        })
    return advisories


def kind_of(adv):
    info = adv["informational"]
    return "vulnerability" if not info else info


def is_affected(adv, version):
    v = Version(version)
    for req in adv["patched"] + adv["unaffected"]:
        if VersionReq(req).matches(v):
            return False
    return True


# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="advisory-db git dir")
    ap.add_argument("--lock", required=True)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--json")
    ap.add_argument("--all-sources", action="store_true",
                    help="also check path/git packages (default: registry only)")
    args = ap.parse_args()
    _selftest()

    advisories = load_advisories(args.db, args.rev)
    by_pkg = {}
    for a in advisories:
        by_pkg.setdefault(a["package"], []).append(a)

    with open(args.lock, "rb") as f:
        lock = tomllib.load(f)
    pkgs = lock.get("package", [])
    checked = [p for p in pkgs
               if args.all_sources or str(p.get("source", "")).startswith("registry+")]

    hits, withdrawn_skipped = [], 0
    for p in checked:
        for a in by_pkg.get(p["name"], []):
            if not is_affected(a, p["version"]):
                continue
            if a["withdrawn"]:
                withdrawn_skipped += 1
                continue
            hits.append({
                "crate": p["name"], "version": p["version"], "id": a["id"],
                "kind": kind_of(a), "title": a["title"], "date": a["date"],
                "patched": a["patched"], "unaffected": a["unaffected"],
                "aliases": a["aliases"], "url": a["url"],
                "affected": a["affected"],
            })

    head = git(args.db, "log", "-1", "--format=%H %cI", args.rev).decode().split()
    summary = {
        "db_commit": head[0], "db_date": head[1],
        "advisories": len(advisories),
        "withdrawn_total": sum(1 for a in advisories if a["withdrawn"]),
        "lock_packages": len(pkgs), "checked_packages": len(checked),
        "withdrawn_hits_skipped": withdrawn_skipped,
        "hits": hits,
    }
    print(f"advisory-db {head[0][:12]} ({head[1]}): {len(advisories)} advisories; "
          f"{len(checked)} of {len(pkgs)} Cargo.lock packages checked")
    for h in hits:
        print(f"{h['crate']} {h['version']}\t{h['id']}\t{h['kind']}\t{h['title']}"
              f"\tpatched={h['patched'] or 'none'}")
    if not hits:
        print("no advisories match")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
